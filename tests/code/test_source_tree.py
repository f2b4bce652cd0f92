import pyarrow.compute as pc

from tokenmill.code.source_tree import parse_tree
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake


def test_a_source_tree_is_parsed_and_bad_files_are_recorded_as_skipped(tmp_path, lake_dir):
    src = tmp_path / "repo"
    (src / "pkg").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "pkg" / "a.py").write_text("def f(x):\n    return 'é' + x\n")
    (src / "pkg" / "b.go").write_text("package main\nfunc main() {}\n")
    (src / "pkg" / "broken.c").write_text("int main() { return 0 }\n")
    (src / "pkg" / "blob.py").write_bytes(b"\x00\x01\x02")
    (src / "pkg" / "latin1.rb").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    (src / "README.md").write_text("# not code\n")
    (src / ".git" / "hook.py").write_text("x = 1\n")
    lake = Lake(str(lake_dir))
    written = parse_tree(lake, "src", [str(src)])
    files = {r["path"]: r for r in lake.read("ast_files", "src").to_pylist()}
    assert set(files) == {"repo/pkg/a.py", "repo/pkg/b.go", "repo/pkg/broken.c", "repo/pkg/blob.py", "repo/pkg/latin1.rb"}
    assert files["repo/pkg/a.py"]["language"] == "python" and files["repo/pkg/a.py"]["functions"] == ["f"]
    assert files["repo/pkg/broken.c"]["missing"] == 1
    assert files["repo/pkg/blob.py"]["skipped"].startswith("binary") and files["repo/pkg/blob.py"]["language"] is None
    assert files["repo/pkg/latin1.rb"]["skipped"].startswith("not UTF-8")
    con = connect(lake)
    nodes = con.execute("SELECT count(*) FROM ast_nodes").fetchone()[0]
    assert written == {"ast_files": 5, "ast_nodes": nodes} and nodes == sum(f["nodes"] for f in files.values())
    # the python file's string literal ends at the right byte despite the non-ASCII character
    end = con.execute("""SELECT n.end_byte FROM ast_nodes n JOIN ast_files f USING (run_id, file_id)
                         WHERE f.path = 'repo/pkg/a.py' AND n.type = 'string'""").fetchone()[0]
    assert end == len("def f(x):\n    return 'é'".encode())
    # a re-run adds nothing
    assert parse_tree(lake, "src", [str(src)]) == {"ast_files": 0, "ast_nodes": 0}


def test_every_nodes_text_is_recoverable_from_the_lake(tmp_path, lake_dir):
    from tokenmill.code.tables import node_texts
    from tokenmill.code.universal_ast import grammar

    src = tmp_path / "repo"
    src.mkdir()
    files = {"a.py": "s = 'é😀'\ndef f(x):\n    return x + 1\n", "b.rb": "puts 'ü'\n", "c.go": "package p\n// ß\n"}
    for name, text in files.items():
        (src / name).write_text(text)
    lake = Lake(str(lake_dir))
    parse_tree(lake, "t", [str(src)])
    ft = lake.read("ast_files", "t").to_pylist()
    nodes = lake.read("ast_nodes", "t").sort_by([("file_id", "ascending"), ("node_id", "ascending")])
    for f in ft:
        assert f["source"] == files[f["path"].split("/")[-1]]
        mine = nodes.filter(pc.equal(nodes.column("file_id"), f["file_id"]))
        texts = node_texts(f["source"], mine.column("start_byte").to_numpy(), mine.column("end_byte").to_numpy())
        ref = []

        def rec(node):
            ref.append(node.text.decode())
            for child in node.children:
                rec(child)

        rec(grammar(f["language"]).parser.parse(f["source"].encode()).root_node)
        assert texts == ref
