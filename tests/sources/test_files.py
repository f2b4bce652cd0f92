"""File-based prompt sources: JSONL, Parquet, saved HF datasets, and `open_source`."""

from __future__ import annotations

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenmill.errors import SourceError
from tokenmill.sources.base import prompts_table
from tokenmill.sources.files import FieldMap, HFDiskSource, JsonlSource, ParquetSource, open_source


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_field_mapping_dotted_path_and_meta(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": {"text": "What is 2+2?", "id": 7}, "answer": 4, "level": "easy", "part": "train"},
            "",  # blank line: skipped, but line numbers still count it
            {"question": {"text": "Capital of France?", "id": 8}, "answer": "Paris", "level": "hard", "part": "test"},
        ],
    )
    fields = FieldMap(prompt="question.text", reference="answer", split="part", meta=("level", "question.id"))
    src = JsonlSource(path, fields)
    assert src.name == "qa"
    prompts = src.load()

    assert [p.prompt for p in prompts] == ["What is 2+2?", "Capital of France?"]
    assert [p.reference for p in prompts] == ["4", "Paris"]  # numbers become their JSON text
    assert [p.split for p in prompts] == ["train", "test"]
    assert all(p.source == "qa" and p.world is None for p in prompts)
    assert prompts[0].meta == {"record": 1, "level": "easy", "question.id": 7}
    assert prompts[1].meta == {"record": 3, "level": "hard", "question.id": 8}

    again = JsonlSource(path, fields).load()
    assert [p.prompt_id for p in again] == [p.prompt_id for p in prompts]
    assert len({p.prompt_id for p in prompts}) == 2
    # the records go into the lake table as they are
    table = prompts_table(prompts)
    assert table.column("reference").to_pylist() == ["4", "Paris"]


def test_jsonl_literal_dotted_key_wins_over_nested_path(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q.text": "literal", "q": {"text": "nested"}}])
    assert JsonlSource(path, FieldMap(prompt="q.text")).load()[0].prompt == "literal"


def test_jsonl_default_reference_is_optional(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"prompt": "b", "reference": "B"}])
    prompts = JsonlSource(path).load()
    assert [p.reference for p in prompts] == [None, "B"]
    assert [p.split for p in prompts] == [None, None]


def test_jsonl_explicit_reference_missing_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "answer": "A"}, {"prompt": "b"}])
    with pytest.raises(SourceError) as e:
        JsonlSource(path, FieldMap(reference="answer")).load()
    assert f"{path}:2" in str(e.value)
    assert "'answer'" in str(e.value)
    # naming the default explicitly also makes it required
    with pytest.raises(SourceError, match=":1"):
        JsonlSource(path, FieldMap(reference="reference")).load()
    # and reference=None ignores it entirely
    assert [p.reference for p in JsonlSource(path, FieldMap(reference=None)).load()] == [None, None]


def test_jsonl_malformed_line(tmp_path):
    path = write_jsonl(tmp_path / "file.jsonl", [{"prompt": "a"}, {"prompt": "b"}, '{"prompt": "c",'])
    with pytest.raises(SourceError) as e:
        JsonlSource(path).load()
    err = e.value
    assert "file.jsonl:3" in str(err)
    assert err.where == f"{path}:3"
    assert "not valid JSON" in err.message
    assert err.fix == "each line must be one JSON object"


def test_jsonl_missing_prompt_field(tmp_path):
    path = write_jsonl(tmp_path / "file.jsonl", [{"question": "ok"}, {"query": "x", "id": 2}])
    with pytest.raises(SourceError) as e:
        JsonlSource(path, FieldMap(prompt="question")).load()
    text = str(e.value)
    assert e.value.where == f"{path}:2"
    assert "file.jsonl:2" in text
    assert "missing field 'question'" in text
    assert "--prompt-field" in text
    assert "query, id" in e.value.fix  # the fields that are on the line


def test_jsonl_missing_nested_field_lists_the_keys_it_found(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": {"body": "x", "id": 1}}])
    with pytest.raises(SourceError) as e:
        JsonlSource(path, FieldMap(prompt="question.text")).load()
    assert "missing field 'question.text'" in str(e.value)
    assert "fields under 'question': body, id" in e.value.fix


def test_jsonl_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(SourceError, match="empty") as e:
        JsonlSource(path).load()
    assert e.value.where == str(path)
    assert e.value.fix


def test_jsonl_line_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "file.jsonl", [{"prompt": "a"}, "[1, 2]"])
    with pytest.raises(SourceError) as e:
        JsonlSource(path).load()
    assert "file.jsonl:2" in str(e.value)
    assert "not a JSON object" in e.value.message
    assert e.value.fix.startswith("each line must be one JSON object")


def test_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}]))
    with pytest.raises(SourceError) as e:
        open_source(str(path)).load()
    assert e.value.where == f"{path}:1"
    assert "one JSON array" in e.value.fix


@pytest.mark.parametrize(
    ("value", "kind"), [(42, "a number"), (["a"], "a list"), (None, "null"), ({"t": "x"}, "an object")]
)
def test_jsonl_non_string_prompt(tmp_path, value, kind):
    path = write_jsonl(tmp_path / "file.jsonl", [{"prompt": "fine"}, {"prompt": value}])
    with pytest.raises(SourceError) as e:
        JsonlSource(path).load()
    assert "file.jsonl:2" in str(e.value)
    assert f"field 'prompt' is {kind}" in e.value.message


def test_jsonl_blank_prompt(tmp_path):
    path = write_jsonl(tmp_path / "file.jsonl", [{"prompt": "  \n\t"}])
    with pytest.raises(SourceError, match=r"file\.jsonl:1: field 'prompt' is empty"):
        JsonlSource(path).load()


def test_jsonl_file_not_found(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(SourceError) as e:
        JsonlSource(path).load()
    assert e.value.where == str(path)
    assert str(path) in e.value.fix


def test_jsonl_not_utf8(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n')
    with pytest.raises(SourceError, match=r"bad\.jsonl:2: not valid UTF-8"):
        JsonlSource(path).load()


def test_jsonl_missing_meta_field(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a", "lvl": 1}, {"prompt": "b"}])
    with pytest.raises(SourceError, match=r"m\.jsonl:2: missing field 'lvl'"):
        JsonlSource(path, FieldMap(meta=("lvl",))).load()


def test_limit_stops_early(tmp_path):
    # line 4 is malformed: a limit of 3 never reaches it
    path = write_jsonl(tmp_path / "l.jsonl", [{"prompt": f"p{i}"} for i in range(3)] + ["{oops"])
    prompts = JsonlSource(path, limit=2).load()
    assert [p.prompt for p in prompts] == ["p0", "p1"]
    assert len(JsonlSource(path, limit=3).load()) == 3
    with pytest.raises(SourceError, match="l.jsonl:4"):
        JsonlSource(path, limit=4).load()
    with pytest.raises(SourceError, match="limit"):
        JsonlSource(path, limit=0)


def test_name_override(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    p_default = JsonlSource(path).load()[0]
    p_named = JsonlSource(path, name="mine").load()[0]
    assert p_named.source == "mine"
    assert p_named.prompt_id != p_default.prompt_id  # the source name is part of the id


def test_fieldmap_rejects_reserved_meta_name():
    with pytest.raises(SourceError, match="reserved"):
        FieldMap(meta=("record",))
    assert FieldMap(meta=["a", "b"]).meta == ("a", "b")


# ----------------------------------------------------------------------------- Parquet


def write_parquet(path, data, schema=None):
    pq.write_table(pa.table(data, schema=schema), path)
    return path


def test_parquet_field_mapping(tmp_path):
    path = write_parquet(
        tmp_path / "qa.parquet",
        {
            "q": [{"text": "one?", "n": 1}, {"text": "two?", "n": 2}],
            "ans": ["1", "2"],
            "difficulty": [0.5, 0.9],
            "unused": ["x", "y"],
        },
    )
    fields = FieldMap(prompt="q.text", reference="ans", meta=("difficulty", "q.n"))
    src = ParquetSource(path, fields)
    prompts = src.load()
    assert src.name == "qa"
    assert [p.prompt for p in prompts] == ["one?", "two?"]
    assert [p.reference for p in prompts] == ["1", "2"]
    assert prompts[1].meta == {"record": 1, "difficulty": 0.9, "q.n": 2}
    assert all(p.source == "qa" and p.world is None and p.split is None for p in prompts)
    assert [p.prompt_id for p in ParquetSource(path, fields).load()] == [p.prompt_id for p in prompts]


def test_parquet_literal_dotted_column(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"q.text": ["literal"], "q": [{"text": "nested"}], "n": [1]})
    prompts = ParquetSource(path, FieldMap(prompt="q.text", meta=("q",))).load()
    assert prompts[0].prompt == "literal"
    assert prompts[0].meta == {"record": 0, "q": {"text": "nested"}}


def test_parquet_default_reference_column_absent(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"prompt": ["a", "b"]})
    assert [p.reference for p in ParquetSource(path).load()] == [None, None]


def test_parquet_missing_column_lists_columns(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"text": ["a"], "label": ["b"]})
    with pytest.raises(SourceError) as e:
        ParquetSource(path, FieldMap(prompt="question")).load()
    text = str(e.value)
    assert e.value.where == str(path)
    assert "'question'" in text
    assert "columns: text, label" in text
    assert "--prompt-field" in text
    with pytest.raises(SourceError, match="no column 'answer'"):
        ParquetSource(path, FieldMap(prompt="text", reference="answer")).load()


def test_parquet_null_prompt_row(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"prompt": ["a", "b", None, "d"]})
    with pytest.raises(SourceError) as e:
        ParquetSource(path).load()
    assert e.value.where == f"{path}:row 2"
    assert "null" in e.value.message


def test_parquet_non_string_prompt(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"prompt": [1, 2]})
    with pytest.raises(SourceError, match=r"row 0: field 'prompt' is a number"):
        ParquetSource(path).load()


def test_parquet_empty_and_limit_and_batches(tmp_path):
    empty = write_parquet(tmp_path / "e.parquet", {"prompt": pa.array([], pa.string())})
    with pytest.raises(SourceError, match="empty"):
        ParquetSource(empty).load()

    path = write_parquet(tmp_path / "many.parquet", {"prompt": [f"p{i}" for i in range(25)]})
    src = ParquetSource(path)
    src.batch_size = 4  # several batches: row numbers keep counting across them
    prompts = src.load()
    assert [p.meta["record"] for p in prompts] == list(range(25))
    limited = ParquetSource(path, limit=5)
    limited.batch_size = 2
    assert [p.prompt for p in limited.load()] == ["p0", "p1", "p2", "p3", "p4"]


def test_parquet_not_found_and_not_parquet(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        ParquetSource(tmp_path / "nope.parquet").load()
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        ParquetSource(bad).load()


# ----------------------------------------------------------------------------- HF datasets


@pytest.fixture
def datasets():
    return pytest.importorskip("datasets")


def test_hf_dataset(tmp_path, datasets):
    ds = datasets.Dataset.from_dict(
        {"question": ["q1", "q2", "q3"], "answer": ["a1", "a2", "a3"], "meta": [{"k": 1}, {"k": 2}, {"k": 3}]}
    )
    ds.save_to_disk(str(tmp_path / "myset"))
    src = HFDiskSource(tmp_path / "myset", FieldMap(prompt="question", reference="answer", meta=("meta.k",)))
    prompts = src.load()
    assert src.name == "myset"
    assert [p.prompt for p in prompts] == ["q1", "q2", "q3"]
    assert [p.reference for p in prompts] == ["a1", "a2", "a3"]
    assert [p.meta for p in prompts] == [{"record": i, "meta.k": i + 1} for i in range(3)]
    assert all(p.source == "myset" and p.split is None for p in prompts)
    assert [p.prompt for p in HFDiskSource(tmp_path / "myset", FieldMap(prompt="question"), limit=2).load()] == [
        "q1",
        "q2",
    ]
    with pytest.raises(SourceError) as e:
        HFDiskSource(tmp_path / "myset", FieldMap(prompt="text")).load()
    assert "no column 'text'" in str(e.value)
    assert "question, answer, meta" in e.value.fix


def test_hf_dataset_dict_splits(tmp_path, datasets):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"prompt": ["t1", "t2"]}),
            "test": datasets.Dataset.from_dict({"prompt": ["e1"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))

    train = HFDiskSource(tmp_path / "dd").load()
    assert [(p.prompt, p.split) for p in train] == [("t1", "train"), ("t2", "train")]
    test = HFDiskSource(tmp_path / "dd", split="test").load()
    assert [(p.prompt, p.split, p.source) for p in test] == [("e1", "test", "dd")]

    with pytest.raises(SourceError) as e:
        HFDiskSource(tmp_path / "dd", split="validation").load()
    assert "no split 'validation'" in str(e.value)
    assert "train, test" in e.value.fix


def test_hf_null_prompt_names_split_and_row(tmp_path, datasets):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["ok", None]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(SourceError) as e:
        HFDiskSource(tmp_path / "dd").load()
    assert e.value.where == f"{tmp_path / 'dd'}[train]:row 1"
    assert "null" in e.value.message


def test_hf_not_a_dataset_directory(tmp_path, datasets):
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="not a saved Hugging Face dataset"):
        HFDiskSource(tmp_path / "plain").load()


def test_hf_without_datasets_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(SourceError) as e:
        HFDiskSource(tmp_path / "anything").load()
    assert e.value.fix == "pip install 'tokenmill[hf]'"


# ----------------------------------------------------------------------------- open_source


def test_open_source_dispatch(tmp_path, datasets):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "x"}])
    json_lines = write_jsonl(tmp_path / "b.json", [{"prompt": "y"}])
    parquet = write_parquet(tmp_path / "c.parquet", {"prompt": ["z"]})
    datasets.Dataset.from_dict({"prompt": ["w"]}).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"prompt": ["t"]}), "test": datasets.Dataset.from_dict({"prompt": ["e"]})}
    ).save_to_disk(str(tmp_path / "dd"))

    assert isinstance(open_source(str(jsonl)), JsonlSource)
    assert isinstance(open_source(jsonl), JsonlSource)  # a Path works too
    assert open_source(str(json_lines)).load()[0].prompt == "y"
    src = open_source(str(parquet), FieldMap(), limit=1)
    assert isinstance(src, ParquetSource) and src.limit == 1 and src.name == "c"
    assert isinstance(open_source(str(tmp_path / "ds")), HFDiskSource)
    assert open_source(str(tmp_path / "dd")).load()[0].prompt == "t"

    hf = open_source(f"hf:{tmp_path / 'dd'}:test")
    assert isinstance(hf, HFDiskSource) and hf.split == "test"
    assert [(p.prompt, p.split) for p in hf.load()] == [("e", "test")]
    assert open_source(f"hf:{tmp_path / 'ds'}").split is None

    fields = FieldMap(prompt="q")
    assert open_source(str(jsonl), fields).fields is fields


def test_open_source_errors(tmp_path):
    with pytest.raises(ValueError) as e:
        open_source("world:arith")
    assert not isinstance(e.value, SourceError)

    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(SourceError) as e:
        open_source(str(other))
    assert e.value.where == str(other)
    assert ".jsonl" in e.value.fix and ".parquet" in e.value.fix and "hf:" in e.value.fix and "world:" in e.value.fix

    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="dataset_info.json"):
        open_source(str(tmp_path / "plain"))
    with pytest.raises(SourceError, match="no such file"):
        open_source("missing-thing")
