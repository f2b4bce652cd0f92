"""One error type for every user-facing failure.

A `TokenmillError` names *what* was wrong (the file, line, record or field) and *how to
fix it*; the CLI prints it as one line and exits non-zero, without a traceback.
"""

from __future__ import annotations


class TokenmillError(Exception):
    """A failure the user can fix. `where` names the file/record/field, `fix` the remedy."""

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f" — {self.fix}"
        return text


class SourceError(TokenmillError):
    """Bad prompt source: malformed file, missing field, empty source, unknown world."""


class LakeError(TokenmillError):
    """The lake cannot be read or written as asked."""


class EngineError(TokenmillError):
    """An engine cannot be built or run (missing model, missing backend, mismatch)."""


def unreadable_file(path: str, err: BaseException, lake: str | None = None) -> LakeError:
    """The error for a lake file a stage could not read: corrupted, truncated, or removed
    after it was listed. Names the file and how to find and fix every such file."""
    lake_opt = f" --lake {lake}" if lake else ""
    if isinstance(err, FileNotFoundError):
        return LakeError("the file disappeared while it was being read (removed by another process?)", where=path,
                         fix="re-run the command; if it keeps happening, check what else writes to or cleans the lake")
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return LakeError(f"cannot read this lake file ({detail})", where=path,
                     fix=f"run `tokenmill check --deep{lake_opt}` to list unreadable files, then restore or remove them and re-run")


def invalid_config(err, options: dict | None = None) -> TokenmillError:
    """One line for a pydantic ValidationError of a config: the first bad field, its value,
    what it must be, and how many other fields are wrong. `options` maps (config class,
    field) to the CLI option that sets it, where that is not `--<field>`."""
    errors = err.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ())) or "config"
    msg = first.get("msg", "invalid").removeprefix("Value error, ")
    got = first.get("input")
    name = str((first.get("loc") or ("",))[-1])  # a model-level error has no loc
    title = getattr(err, "title", "")
    # a field's whole path first (PipelineConfig's sampling.n: --samples), then its name
    if first.get("type") == "extra_forbidden":  # a typo or a stale field: never run the defaults in its place
        return TokenmillError(f"unknown config field {title}.{field}",
                              fix="check its spelling (a config model's fields: docs/USER_GUIDE.md, `--help`)")
    option = (options or {}).get((title, field)) or (options or {}).get((title, name)) or "--" + name.replace("_", "-")
    value = "" if isinstance(got, dict) else f" {got!r}"
    more = f"; {len(errors) - 1} more field(s) invalid" if len(errors) > 1 else ""
    return TokenmillError(f"{option}{value}: {msg[:1].lower() + msg[1:]} (config field {title}.{field}){more}",
                          fix="give an allowed value; `tokenmill <command> --help` lists the options")
