"""Prompt sources read from files: JSON Lines, Parquet, and saved Hugging Face datasets.

A `FieldMap` says which field of a record holds the prompt, the reference answer, the
split and any extra metadata; field names may be dotted paths into nested objects
(`"question.text"`). Every source yields `Prompt` records whose `source` is the source
name (by default the file or directory stem) and whose `meta` carries
``{"record": <line number or row index>}`` plus the mapped meta fields.

Bad input never gets past `load()`: it raises `SourceError` naming the file, the line
(``file.jsonl:3``) or row (``file.parquet:row 7``), the field, and how to fix it.

`open_source(spec)` picks the source from a path:

- ``*.jsonl`` / ``*.ndjson`` / ``*.json`` (one JSON object per line) → `JsonlSource`
- ``*.parquet`` / ``*.pq``                                           → `ParquetSource`
- a directory holding ``dataset_info.json`` or ``dataset_dict.json``  → `HFDiskSource`
- ``hf:<dir>[:<split>]``                                              → `HFDiskSource`

The synthetic worlds (``world:<name>``) are not file sources: `open_source` raises
`ValueError` for them, and the caller resolves them by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenmill.errors import SourceError
from tokenmill.pairs import split_pair
from tokenmill.sources.base import Prompt

__all__ = [
    "FieldMap",
    "JsonlSource",
    "ParquetSource",
    "HFDiskSource",
    "open_source",
    "JSONL_SUFFIXES",
    "PARQUET_SUFFIXES",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
HF_MARKERS = ("dataset_info.json", "dataset_dict.json")

# The command-line option that maps each role (named in fixes, so users know what to type).
FIELD_OPTIONS = {
    "prompt": "--prompt-field",
    "reference": "--reference-field",
    "split": "--split-field",
    "meta": "--meta-field",
}

_ACCEPTED_FORMS = (
    "a .jsonl/.ndjson/.json file (one JSON object per line), "
    "a .parquet file, "
    "a directory saved with datasets' save_to_disk (or hf:DIR[:SPLIT]), "
    "or world:NAME for a synthetic world"
)
_MAX_LISTED = 20


class _DefaultName(str):
    """A field name that was not given by the user (so its absence is not an error)."""

    __slots__ = ()


_DEFAULT_REFERENCE = _DefaultName("reference")


@dataclass(frozen=True)
class FieldMap:
    """Which record fields feed which `Prompt` attributes.

    - `prompt`: the prompt text; must be a non-empty string on every record.
    - `reference`: the reference answer. Left at its default (``"reference"``) it is
      optional: records (or whole sources) without it get ``reference=None``. Given
      explicitly — ``FieldMap(reference="answer")``, even ``FieldMap(reference="reference")``
      — it is required on every record. ``None`` means "no reference". Non-string
      values (numbers, lists) are stored as their JSON text.
    - `split`: a field holding the split name (train/test), if any.
    - `meta`: extra fields copied into `Prompt.meta`, each ``PATH`` (kept under its dotted
      name) or ``KEY=PATH`` (kept under KEY: ``tests=test_list`` gives the code-tests
      verifier MBPP's asserts); each is required on every record. ``"record"`` (the record
      index) and ``"verifier"`` (set by ``--verifier``) are reserved keys.

    Names may be dotted paths into nested objects (``"question.text"``); a key that
    literally contains the dot wins over the nested path.
    """

    prompt: str = "prompt"
    reference: str | None = _DEFAULT_REFERENCE
    split: str | None = None
    meta: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.meta, str):
            object.__setattr__(self, "meta", (self.meta,))
        else:
            object.__setattr__(self, "meta", tuple(self.meta))
        for role, name in (("prompt", self.prompt), ("reference", self.reference), ("split", self.split)):
            if name is None and role != "prompt":
                continue
            if not isinstance(name, str) or not name.strip():
                raise SourceError(
                    f"the {role} field name must be a non-empty string (got {name!r})",
                    fix=f"pass a field name with {FIELD_OPTIONS[role]} NAME",
                )
        keys: dict[str, str] = {}
        for entry in self.meta:
            if not isinstance(entry, str) or not entry.strip():
                raise SourceError(
                    f"meta field names must be non-empty strings (got {entry!r})",
                    fix=f"pass field names with {FIELD_OPTIONS['meta']} NAME or KEY=NAME",
                )
            key, path = split_pair(entry) or (entry.strip(), entry.strip())  # NAME: kept under its name
            if not key or not path:
                raise SourceError(f"meta field {entry!r} needs both a key and a field",
                                  fix=f"pass {FIELD_OPTIONS['meta']} KEY=NAME, e.g. tests=test_list")
            if key in ("record", "verifier"):
                raise SourceError(
                    f"meta key {key!r} is reserved ({'the record line/row number' if key == 'record' else 'set by --verifier'})",
                    fix="map the field under another key: --meta-field OTHER=" + path,
                )
            if path in keys and keys[path] != key:
                raise SourceError(f"field {path!r} is mapped twice ({keys[path]}, {key})", fix="map each field once")
            keys[path] = key
        object.__setattr__(self, "_meta_keys", keys)

    @property
    def reference_required(self) -> bool:
        """True when the user named the reference field, so every record must have it."""
        return self.reference is not None and not isinstance(self.reference, _DefaultName)

    def roles(self) -> list[tuple[str, str, bool]]:
        """(role, field name, required) for every mapped field, prompt first."""
        out = [("prompt", self.prompt, True)]
        if self.reference is not None:
            out.append(("reference", self.reference, self.reference_required))
        if self.split is not None:
            out.append(("split", self.split, True))
        out.extend(("meta", path, True) for path in self._meta_keys)
        return out


# --------------------------------------------------------------------------- helpers


class _Missing(Exception):
    """A dotted path not found; `prefix` is how far it got, `keys` what was there."""

    def __init__(self, prefix: str, keys: list[str] | None):
        self.prefix = prefix
        self.keys = keys


def _lookup(obj: Any, dotted: str) -> Any:
    """`obj[dotted]`, following dots into nested mappings (longest literal key first)."""
    if isinstance(obj, dict) and dotted in obj:  # the common case: a plain key
        return obj[dotted]
    parts = dotted.split(".")
    if len(parts) == 1:
        raise _Missing("", [str(k) for k in obj] if isinstance(obj, Mapping) else None)
    if len(parts) == 2 and isinstance(obj, dict):  # "a.b": one level down
        inner = obj.get(parts[0])
        if isinstance(inner, dict) and parts[1] in inner:
            return inner[parts[1]]
    best: _Missing | None = None

    def walk(node: Any, i: int, prefix: str) -> Any:
        nonlocal best
        if not isinstance(node, Mapping):
            miss = _Missing(prefix, None)
            if best is None or len(prefix) > len(best.prefix):
                best = miss
            raise miss
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                if j == len(parts):
                    return node[key]
                try:
                    return walk(node[key], j, f"{prefix}.{key}" if prefix else key)
                except _Missing:
                    continue
        miss = _Missing(prefix, [str(k) for k in node])
        if best is None or len(prefix) > len(best.prefix):
            best = miss
        raise miss

    try:
        return walk(obj, 0, "")
    except _Missing:
        assert best is not None
        raise best from None


def _names(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", … ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary data (bytes)"
    return f"a {type(value).__name__}"


def _has_non_finite(value: Any) -> bool:
    """NaN or ±Infinity anywhere in a JSON-like value (Python's json reads them)."""
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, Mapping):
        return any(_has_non_finite(v) for v in value.values())
    return False


def _as_text(value: Any) -> str:
    """A reference/split value as text: strings as-is, anything else as its JSON."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SourceError(f"limit must be a positive integer (got {limit!r})", fix="use --limit N with N ≥ 1")
    return limit


def _empty(path: str, what: str) -> SourceError:
    return SourceError("source is empty", where=path, fix=f"the source needs at least one {what}")


def _missing_error(role: str, name: str, where: str, miss: _Missing, here: str) -> SourceError:
    if miss.prefix:
        found = f"'{miss.prefix}' is not an object" if miss.keys is None else f"fields under '{miss.prefix}': {_names(miss.keys)}"
    else:
        found = f"fields {here}: {_names(miss.keys or [])}"
    if role == "reference":
        fix = f"map the reference field with {FIELD_OPTIONS[role]} NAME, or leave it unmapped ({found})"
    else:
        fix = f"map the {role} field with {FIELD_OPTIONS[role]} NAME ({found})"
    return SourceError(f"missing field '{name}'", where=where, fix=fix)


def _make_prompt(
    row: Mapping[str, Any],
    *,
    fields: FieldMap,
    source: str,
    where: str,
    record: int,
    here: str,
    split: str | None = None,
    skip: frozenset[str] = frozenset(),
    roles: list[tuple[str, str, bool]] | None = None,
) -> Prompt:
    """One `Prompt` from one record.

    `skip` holds optional roles known absent from the whole source; `roles` is
    `fields.roles()` minus those, precomputed by the caller for speed.
    """
    values: dict[str, Any] = {}
    meta: dict[str, Any] = {"record": record}
    if roles is None:
        roles = [r for r in fields.roles() if r[0] not in skip]
    for role, name, required in roles:
        try:
            value = _lookup(row, name)
        except _Missing as miss:
            if not required:
                continue
            raise _missing_error(role, name, where, miss, here) from None
        if role == "meta":
            meta[fields._meta_keys[name]] = value
        else:
            values[role] = value

    text = values["prompt"]
    if not isinstance(text, str):
        raise SourceError(
            f"field '{fields.prompt}' is {_kind(text)}, not a string",
            where=where,
            fix="every record needs its prompt as text; map another field with --prompt-field NAME",
        )
    if not text.strip():
        raise SourceError(
            f"field '{fields.prompt}' is empty",
            where=where,
            fix="every record needs a non-empty prompt; drop or fill this record",
        )
    reference = values.get("reference")
    split_value = values.get("split")
    for role, value in (("reference", reference), ("split", split_value)):
        if _has_non_finite(value):
            raise SourceError(
                f"field '{getattr(fields, role)}' holds NaN or Infinity, which no answer equals",
                where=where,
                fix="give the reference as a finite number or as text (or drop this record)",
            )
    prompt = Prompt(
        source=source,
        prompt=text,
        world=None,
        split=_as_text(split_value) if split_value is not None else split,
        reference=_as_text(reference) if reference is not None else None,
        meta=meta,
    )
    _check_unicode(prompt.prompt, fields.prompt, where)
    if prompt.reference is not None:
        _check_unicode(prompt.reference, fields.reference, where)
    if prompt.split is not None and split_value is not None:
        _check_unicode(prompt.split, fields.split, where)
    if len(meta) > 1:
        _check_unicode(json.dumps(meta, ensure_ascii=False, default=str), "meta", where)
    return prompt


def _check_unicode(text: str, field: str, where: str) -> None:
    """Refuse text Python holds but UTF-8 cannot encode: a lone surrogate, from a JSON escape
    such as \\ud800 without its pair (ids, Arrow and Parquet all need UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SourceError(
            f"field '{field}' is not valid Unicode: a lone surrogate {text[e.start]!r} at character {e.start}",
            where=where,
            fix="write a character outside the BMP as a surrogate pair (\\ud83d\\ude00) or as itself, in UTF-8",
        ) from None


def _columns_needed(fields: FieldMap, columns: list[str], where: str) -> tuple[list[str], frozenset[str]]:
    """Top-level columns to read for `fields`, and the optional roles absent from the source.

    Raises `SourceError` (naming the column and listing the available ones) for a
    required field whose top-level column does not exist.
    """
    colset = set(columns)
    needed: list[str] = []
    skip: set[str] = set()
    for role, name, required in fields.roles():
        parts = name.split(".")
        top = next((".".join(parts[:j]) for j in range(len(parts), 0, -1) if ".".join(parts[:j]) in colset), None)
        if top is None:
            if not required:
                skip.add(role)
                continue
            if role == "reference":
                fix = f"map the reference field with {FIELD_OPTIONS[role]} NAME, or leave it unmapped (columns: {_names(columns)})"
            else:
                fix = f"map the {role} field with {FIELD_OPTIONS[role]} NAME (columns: {_names(columns)})"
            raise SourceError(f"no column '{name}'", where=where, fix=fix)
        if top not in needed:
            needed.append(top)
    return needed, frozenset(skip)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in JSONL_SUFFIXES + PARQUET_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem or name or str(path)


def _check_name(name: str, path: Path) -> None:
    """The source name goes into every prompt id and the lake: it must be valid UTF-8 (a file
    name with undecodable bytes reaches Python as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError("the source name (from the file name) is not valid UTF-8", where=ascii(str(path)),
                          fix="rename the file with a UTF-8 name") from None


def _not_found(path: str, what: str) -> SourceError:
    return SourceError(f"{what} not found", where=path, fix=f"expected {what} at {os.path.abspath(path)}")


class _FileSource:
    """What the file sources share: a path, a field map, a name and an optional limit."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: FieldMap | None = None,
        *,
        name: str | None = None,
        limit: int | None = None,
    ):
        self.path = Path(path)
        self.fields = fields if fields is not None else FieldMap()
        self.name = name or _stem(self.path)
        self.limit = _check_limit(limit)
        _check_name(self.name, self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, name={self.name!r}, limit={self.limit!r})"


# --------------------------------------------------------------------------- JSON Lines


class JsonlSource(_FileSource):
    """One JSON object per line (blank lines skipped), read as a stream.

    `Prompt.meta["record"]` is the 1-based line number.
    """

    def _lines(self) -> Iterator[tuple[int, str]]:
        path = str(self.path)
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise _not_found(path, "JSONL file") from None
        except IsADirectoryError:
            raise SourceError(
                "is a directory, not a JSONL file", where=path, fix="pass the .jsonl file itself"
            ) from None
        except OSError as e:
            raise SourceError(f"cannot open ({e.strerror or e})", where=path, fix="check the path and its permissions") from None
        with f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise SourceError(
                        f"not valid UTF-8 ({e.reason} at byte {e.start})",
                        where=f"{path}:{lineno}",
                        fix="save the file as UTF-8",
                    ) from None
                yield lineno, line

    def load(self) -> list[Prompt]:
        path = str(self.path)
        roles = self.fields.roles()
        prompts: list[Prompt] = []
        for lineno, line in self._lines():
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(
                    f"not valid JSON ({e.msg}: column {e.colno})",
                    where=where,
                    fix="each line must be one JSON object",
                ) from None
            if not isinstance(record, dict):
                fix = "each line must be one JSON object"
                if lineno == 1 and isinstance(record, list):
                    fix += " (this looks like one JSON array: write one object per line instead)"
                raise SourceError(f"not a JSON object (got {_kind(record)})", where=where, fix=fix)
            prompts.append(
                _make_prompt(
                    record,
                    fields=self.fields,
                    source=self.name,
                    where=where,
                    record=lineno,
                    here="on this line",
                    roles=roles,
                )
            )
            if self.limit is not None and len(prompts) >= self.limit:
                break
        if not prompts:
            raise _empty(path, "JSON object per line")
        return prompts


# --------------------------------------------------------------------------- Parquet


class ParquetSource(_FileSource):
    """A Parquet file read with pyarrow, in batches, only the mapped columns.

    `Prompt.meta["record"]` is the 0-based row index (errors say ``file:row i``).
    """

    batch_size = 4096

    def load(self) -> list[Prompt]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = str(self.path)
        if not self.path.exists():
            raise _not_found(path, "Parquet file")
        if self.path.is_dir():
            raise SourceError("is a directory, not a Parquet file", where=path, fix="pass the .parquet file itself")
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"not a readable Parquet file ({e})", where=path, fix="check that the file is Parquet") from None

        with pf:
            columns = list(pf.schema_arrow.names)
            needed, skip = _columns_needed(self.fields, columns, path)
            roles = [r for r in self.fields.roles() if r[0] not in skip]
            prompts: list[Prompt] = []
            row = 0
            try:
                for batch in pf.iter_batches(batch_size=self.batch_size, columns=needed):
                    # pyarrow also reads "a.b" as the nested path a → b; keep the exact names only
                    if batch.schema.names != needed:
                        batch = batch.select(needed)
                    for record in batch.to_pylist():
                        prompts.append(
                            _make_prompt(
                                record,
                                fields=self.fields,
                                source=self.name,
                                where=f"{path}:row {row}",
                                record=row,
                                here="in this row",
                                roles=roles,
                            )
                        )
                        row += 1
                        if self.limit is not None and len(prompts) >= self.limit:
                            return prompts
            except pa.ArrowException as e:
                raise SourceError(
                    f"cannot read Parquet data near row {row} ({e})",
                    where=path,
                    fix="check that the file is complete and not corrupted",
                ) from None
        if not prompts:
            raise _empty(path, "row")
        return prompts


# --------------------------------------------------------------------------- HF datasets


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise SourceError(
            "reading a saved Hugging Face dataset needs the 'datasets' package",
            fix="pip install 'tokenmill[hf]'",
        ) from None
    return datasets


class HFDiskSource:
    """A local Hugging Face dataset directory (`Dataset.save_to_disk` or a `DatasetDict`).

    For a `DatasetDict`, `split` picks the split (default ``"train"``); for a plain
    `Dataset`, `split` (if given) labels its prompts. `Prompt.split` is the split name
    unless `FieldMap.split` maps a column. `Prompt.meta["record"]` is the 0-based row.
    """

    batch_size = 1024

    def __init__(
        self,
        path: str | os.PathLike[str],
        fields: FieldMap | None = None,
        *,
        split: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ):
        self.path = Path(path)
        self.fields = fields if fields is not None else FieldMap()
        self.split = split
        self.name = name or self.path.name or str(self.path)
        self.limit = _check_limit(limit)
        _check_name(self.name, self.path)

    def __repr__(self) -> str:
        return f"HFDiskSource({str(self.path)!r}, split={self.split!r}, name={self.name!r}, limit={self.limit!r})"

    def _open(self):
        """(dataset, split name or None, where-prefix)."""
        datasets = _import_datasets()
        path = str(self.path)
        if not self.path.exists():
            raise _not_found(path, "dataset directory")
        if not self.path.is_dir():
            raise SourceError(
                "not a directory", where=path, fix="pass the directory written by Dataset.save_to_disk"
            )
        try:
            loaded = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise SourceError(
                f"not a saved Hugging Face dataset ({e})",
                where=path,
                fix="save it with Dataset.save_to_disk / DatasetDict.save_to_disk, or pass a .jsonl/.parquet file",
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            split = self.split or "train"
            if split not in loaded:
                raise SourceError(
                    f"no split '{split}'",
                    where=path,
                    fix=f"pick one of the splits: {_names(list(loaded))} (hf:{path}:SPLIT)",
                )
            return loaded[split], split, f"{path}[{split}]"
        if not isinstance(loaded, datasets.Dataset):
            raise SourceError(
                f"unsupported dataset type {type(loaded).__name__}",
                where=path,
                fix="save a Dataset or DatasetDict with save_to_disk",
            )
        split = self.split
        if split is None and loaded.split is not None:
            split = str(loaded.split)
        return loaded, split, path

    def load(self) -> list[Prompt]:
        ds, split, where = self._open()
        needed, skip = _columns_needed(self.fields, list(ds.column_names), where)
        roles = [r for r in self.fields.roles() if r[0] not in skip]
        ds = ds.with_format(None).select_columns(needed)
        prompts: list[Prompt] = []
        row = 0
        for batch in ds.iter(batch_size=self.batch_size):
            n = len(batch[needed[0]])
            for k in range(n):
                record = {c: batch[c][k] for c in needed}
                prompts.append(
                    _make_prompt(
                        record,
                        fields=self.fields,
                        source=self.name,
                        where=f"{where}:row {row}",
                        record=row,
                        here="in this row",
                        split=split,
                        roles=roles,
                    )
                )
                row += 1
                if self.limit is not None and len(prompts) >= self.limit:
                    return prompts
        if not prompts:
            raise _empty(where, "row")
        return prompts


# --------------------------------------------------------------------------- dispatch


def open_source(
    spec: str | os.PathLike[str],
    fields: FieldMap | None = None,
    limit: int | None = None,
    *,
    name: str | None = None,
) -> JsonlSource | ParquetSource | HFDiskSource:
    """The file source for `spec` (see the module docstring for the accepted forms).

    Nothing is read here; errors in the data surface from `load()`. A ``world:NAME``
    spec raises `ValueError`: the synthetic worlds are resolved by name elsewhere, so a
    caller tries them first (or catches the `ValueError`). Any other unrecognised spec
    raises `SourceError` listing the accepted forms.
    """
    text = os.fspath(spec)
    if text.startswith("world:"):
        raise ValueError(f"{text!r} names a synthetic world, not a file source; resolve it by world name")
    if text.startswith("hf:"):
        rest = text[3:]
        split = None
        if not os.path.isdir(rest) and ":" in rest:
            head, tail = rest.rsplit(":", 1)
            if head and tail:
                rest, split = head, tail
        if not rest:
            raise SourceError("empty dataset directory", where=text, fix="use hf:DIR or hf:DIR:SPLIT")
        return HFDiskSource(rest, fields, split=split, name=name, limit=limit)

    lower = text.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return JsonlSource(text, fields, name=name, limit=limit)
    if lower.endswith(PARQUET_SUFFIXES):
        return ParquetSource(text, fields, name=name, limit=limit)
    if os.path.isdir(text):
        if any(os.path.isfile(os.path.join(text, m)) for m in HF_MARKERS):
            return HFDiskSource(text, fields, name=name, limit=limit)
        raise SourceError(
            "directory is not a saved Hugging Face dataset (no dataset_info.json or dataset_dict.json)",
            where=text,
            fix=f"pass {_ACCEPTED_FORMS}",
        )
    if not os.path.exists(text) and not os.path.splitext(text)[1]:
        raise SourceError("no such file or directory, and not a known source form", where=text, fix=f"pass {_ACCEPTED_FORMS}")
    raise SourceError("unrecognised prompt source", where=text, fix=f"pass {_ACCEPTED_FORMS}")
