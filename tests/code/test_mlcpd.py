"""The MLCPD export: fields and categories worked by hand from MLCPD's parse_converter.py."""

import hashlib
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tokenmill.code.mlcpd import COLUMNS, export_mlcpd, line_metrics, mlcpd_category, to_mlcpd
from tokenmill.code.source_tree import parse_tree
from tokenmill.code.universal_ast import parse
from tokenmill.errors import TokenmillError
from tokenmill.storage.lake import Lake

CODE = "import os\ndef f(x):\n    return x + 1\n"


def test_a_small_python_file_in_mlcpds_schema_worked_by_hand():
    row = to_mlcpd(CODE, "python", parse(CODE.encode(), "python").nodes)
    assert list(row) == [f.name for f in COLUMNS]
    s = json.loads(row["universal_schema"])
    assert list(s) == ["language", "success", "metadata", "ast", "node_categories", "cross_language_map",
                       "original_source_code"]
    # dropped: module (its type), `import`/`def`/`return` and punctuation (their text), dotted_name and block
    # (their types); a node under a dropped one names the kept ancestor as parent without being its child
    got = [(n["id"], n["type"], n["text"], n["parent"], n["children"]) for n in s["ast"]["nodes"]]
    assert got == [
        (0, "import_statement", "import os", None, []),
        (1, "identifier", "os", 0, []),
        (2, "function_definition", "def f(x):\n    return x + 1", None, [3, 4]),
        (3, "identifier", "f", 2, []),
        (4, "parameters", "(x)", 2, [5]),
        (5, "identifier", "x", 4, []),
        (6, "return_statement", "return x + 1", 2, [7]),
        (7, "binary_operator", "x + 1", 6, [8, 9, 10]),
        (8, "identifier", "x", 7, []),
        (9, "+", "+", 7, []),
        (10, "integer", "1", 7, []),
    ]
    assert s["ast"]["root"] == "module" and s["ast"]["nodes"][2]["start_point"] == {"row": 1, "column": 0}
    assert s["ast"]["nodes"][2]["end_point"] == {"row": 2, "column": 16}
    # MLCPD's substring keywords, first match wins: `identifier` contains "if", so it is a conditional there
    assert s["node_categories"] == {
        "declarations": {"functions": [2], "variables": [], "classes": [], "imports": [0], "modules": [], "enums": []},
        "statements": {"expressions": [], "assignments": [], "loops": [], "conditionals": [1, 3, 5, 8],
                       "returns": [6], "exceptions": []},
        "expressions": {"calls": [], "literals": [10], "identifiers": [], "binary_operations": [7],
                        "unary_operations": [], "member_access": []},
    }
    assert s["cross_language_map"] == {
        "function_declarations": [{"node_id": 2, "universal_type": "function", "name": "f",
                                   "text_snippet": "def f(x):\n    return x + 1"}],
        "class_declarations": [], "import_statements": [{"node_id": 0, "text": "import os"}]}
    # three lines of 9, 9 and 16 characters
    assert s["metadata"] == {"lines": 3, "avg_line_length": 11.33, "nodes": 11, "errors": 0,
                             "source_hash": hashlib.sha256(CODE.encode()).hexdigest(), "categorized_nodes": 9}
    assert s["language"] == "python" and s["success"] is True and s["original_source_code"] == CODE
    assert (row["line_count"], row["avg_line_length"], row["ast_node_count"], row["num_errors"]) == (3, 11.33, 20, 0)
    assert row["lang_specific_parse"].splitlines()[:3] == [
        '(module) "import os\\ndef f(x):\\n    return x + 1\\n"', '  (import_statement) "import os"', '    (import) "import"']


def test_mlcpd_keyword_order_and_line_count_quirks():
    assert mlcpd_category("constructor_declaration") == ("declarations", "classes")  # struct inside constructor
    assert mlcpd_category("package_declaration") == ("declarations", "modules")
    assert mlcpd_category("package_clause") == ("declarations", "modules")
    assert mlcpd_category("with_statement") is None  # MLCPD leaves it uncategorised
    assert mlcpd_category("format_specifier") == ("statements", "conditionals")  # spec-IF-ier
    # an empty line is dropped and the line after it is not looked at (the second empty line stays: 1 + 0 + 2
    # characters on 3 lines); a line ending in `\` is doubled and pops the one before it (at the start: the last)
    assert line_metrics("a\n\n\nbb\n") == (1.0, 3) and line_metrics("ab\\\ncd") == (5.0, 1)
    assert line_metrics("  \n ") == (0.0, 0)


def test_non_ascii_text_and_the_languages_spelling():
    code = "class A { string s = \"é😀\"; int n = 1; }"
    row = to_mlcpd(code, "c_sharp", parse(code.encode(), "c_sharp").nodes)
    s = json.loads(row["universal_schema"])
    assert row["language"] == "c-sharp" and s["language"] == "c_sharp"  # the dataset column vs the parser's name
    texts = {n["type"]: n["text"] for n in s["ast"]["nodes"]}
    assert texts["integer_literal"] == "1" and texts["string_literal"] == '"é😀"'  # UTF-8 bytes, not shifted
    assert [c["name"] for c in s["cross_language_map"]["class_declarations"]] == ["A"]


def test_export_from_the_lake_via_the_cli(tmp_path, lake_dir):
    from tokenmill.cli import app

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text(CODE)
    (src / "b.go").write_text("package main\nfunc main() { x := 1; _ = x }\n")
    (src / "c.py").write_bytes(b"\x00")  # skipped: not exported
    parse_tree(Lake(str(lake_dir)), "corpus", [str(src)])
    out = tmp_path / "mlcpd"
    r = CliRunner().invoke(app, ["ast", "export-mlcpd", "--lake", str(lake_dir), "--run-id", "corpus", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["go_parsed_1.parquet", "python_parsed_1.parquet"]
    t = pq.read_table(out / "python_parsed_1.parquet")
    assert t.schema.equals(COLUMNS) and t.num_rows == 1
    assert t.column("universal_schema")[0].as_py() == to_mlcpd(CODE, "python", parse(CODE.encode(), "python").nodes)[
        "universal_schema"]
    assert export_mlcpd(Lake(str(lake_dir)), "corpus", tmp_path / "j", fmt="json", languages=["go"]) == {"go": 1}
    (doc,) = json.loads((tmp_path / "j" / "go_parsed_1.json").read_text())
    assert doc["language"] == "go" and doc["ast"]["root"] == "source_file"


def test_the_cli_reports_a_run_without_parsed_files_in_one_line(tmp_path, lake_dir, monkeypatch, capsys):
    from tokenmill.cli import main

    monkeypatch.setattr("sys.argv", ["tokenmill", "ast", "export-mlcpd", "--lake", str(lake_dir), "--run-id",
                                     "nothing", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code != 0 and "run 'nothing' has no parsed files" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_export_requests_are_one_clear_error(tmp_path, lake_dir):
    lake = Lake(str(lake_dir))
    with pytest.raises(TokenmillError, match="unknown export format 'xml'"):
        export_mlcpd(lake, "r", tmp_path, fmt="xml")
    (tmp_path / "f").write_text("")
    with pytest.raises(TokenmillError, match="is a file"):
        export_mlcpd(lake, "r", tmp_path / "f")
    with pytest.raises(TokenmillError, match="unsupported language 'cobol'"):
        export_mlcpd(lake, "r", tmp_path / "o", languages=["cobol"])
