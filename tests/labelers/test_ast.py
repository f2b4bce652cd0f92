import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.labelers.ast.labeler import AstLabeler


def test_hand_made_rollout_tokens_align_with_their_nodes():
    completion = "Sure.\n```python\ndef g(x):\n    return x * 2\n```"
    pieces = ["Sure", ".\n```python\n", "def", " g", "(x", "):", "\n   ", " return", " x", " *", " 2", "\n```"]
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos)
        pos += len(p)
    assert "".join(pieces) == completion
    rollouts = pa.table({"rollout_id": ["r"], "world": [None], "completion": [completion]})
    tokens = pa.table({"rollout_id": ["r"] * len(pieces), "pos": list(range(len(pieces))), "char_start": starts,
                       "char_end": [s + len(p) for s, p in zip(starts, pieces)]})
    files, nodes, toks = AstLabeler().label(rollouts, tokens)
    assert files.num_rows == 1 and files.column("language").to_pylist() == ["python"]
    assert files.column("functions").to_pylist() == [["g"]] and files.column("char_start").to_pylist() == [16]
    got = {r["pos"]: (r["type"], r["category"]) for r in toks.to_pylist()}
    assert sorted(got) == list(range(2, 12))  # prose tokens have no node
    assert got[2] == ("function_definition", "function") and got[3] == ("identifier", "identifier")
    assert got[4] == ("parameters", "other") and got[7] == ("return_statement", "return")
    assert got[9] == ("binary_operator", "binary_operation") and got[10] == ("integer", "literal")
    assert nodes.num_rows == files.column("nodes").to_pylist()[0]


def test_code_world_rollouts_are_labelled_as_a_whole(copy_lake):
    from tests.conftest import make_run

    make_run(str(copy_lake), run_id="c", n_prompts=6, samples=2, world="code")
    lake = Lake(str(copy_lake))
    labeler = AstLabeler()
    out = [labeler.label_shard(lake, "c", s) for s in lake.files("rollouts", "c")]
    con = connect(lake)
    n_rollouts = con.execute("SELECT count(*) FROM rollouts WHERE run_id = 'c'").fetchone()[0]
    assert con.execute("SELECT count(*) FROM ast_files WHERE run_id = 'c'").fetchone()[0] == n_rollouts
    covered = con.execute("""SELECT count(*) FROM ast_tokens a JOIN tokens t USING (run_id, rollout_id, pos)
                             WHERE a.run_id = 'c' AND t.char_end > t.char_start""").fetchone()[0]
    nonempty = con.execute("SELECT count(*) FROM tokens WHERE run_id = 'c' AND char_end > char_start").fetchone()[0]
    assert covered == nonempty  # every visible token of a code completion sits in the parsed code
    # every token's node really covers the token's first byte (ASCII code: char = byte offsets)
    bad = con.execute("""SELECT count(*) FROM ast_tokens a JOIN tokens t USING (run_id, rollout_id, pos)
                         JOIN ast_nodes n ON n.run_id = a.run_id AND n.file_id = a.file_id AND n.node_id = a.node_id
                         WHERE a.run_id = 'c' AND NOT (n.start_byte <= t.char_start + length(regexp_extract(
                               substr((SELECT completion FROM rollouts r WHERE r.rollout_id = a.rollout_id),
                                      t.char_start + 1, t.char_end - t.char_start), '^\\s*'))
                               AND t.char_start < n.end_byte)""").fetchone()[0]
    assert bad == 0 and sum(o["ast_tokens"] for o in out) == covered
    assert all(o == {"ast_files": 0, "ast_nodes": 0, "ast_tokens": 0} for o in
               (labeler.label_shard(lake, "c", s) for s in lake.files("rollouts", "c")))


def test_a_rollout_blocks_node_text_is_recoverable_from_its_files_row():
    from tokenmill.code.tables import node_texts

    completion = "Here:\n```python\nx = 'é😀'\ny = x + 1\n```\nand\n```js\nlet z = [1, 2];\n```"
    rollouts = pa.table({"rollout_id": ["r"], "world": [None], "completion": [completion]})
    tokens = pa.table({"rollout_id": ["r"], "pos": [0], "char_start": [0], "char_end": [4]})
    files, nodes, _ = AstLabeler().label(rollouts, tokens)
    assert [f["source"] for f in files.to_pylist()] == ["x = 'é😀'\ny = x + 1\n", "let z = [1, 2];\n"]
    for f in files.to_pylist():
        mine = nodes.filter(pa.compute.equal(nodes.column("file_id"), f["file_id"]))
        texts = node_texts(f["source"], mine.column("start_byte").to_numpy(), mine.column("end_byte").to_numpy())
        got = dict(zip(mine.column("type").to_pylist(), texts))
        assert got.get("string") == "'é😀'" or got.get("array") == "[1, 2]"
        # the text starts in the completion at char_start + the characters before the node's first byte
        assert completion[f["char_start"]:f["char_start"] + len(f["source"])] == f["source"]
