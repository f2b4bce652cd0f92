"""AST labels under another `--code-language`, and unfenced code from file sources (issue 18)."""

import json

import pyarrow as pa

from tokenmill.config import AstConfig, SourceConfig
from tokenmill.engines import SamplingParams
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.tasks import generate, prompts, verify
from tokenmill.labelers.ast.labeler import AstLabeler


def _label(lake, run_id, language):
    labeler = AstLabeler(AstConfig(language=language))
    for shard in lake.files("rollouts", run_id):
        labeler.label_shard(lake, run_id, shard)
    return labeler


def test_relabelling_in_another_language_keeps_files_nodes_and_tokens_in_agreement(copy_lake):
    from tests.conftest import make_run

    make_run(str(copy_lake), run_id="c", n_prompts=4, samples=2, world="code")
    lake = Lake(str(copy_lake))
    _label(lake, "c", None)  # the code world's default: python
    _label(lake, "c", "javascript")  # the same completions read as JavaScript
    con = connect(lake)
    per_config = dict(con.execute("""SELECT t.params, list(DISTINCT f.language) FROM ast_tokens t
                                     JOIN ast_files f USING (run_id, file_id) GROUP BY ALL""").fetchall())
    assert sorted(per_config.values()) == [["javascript"], ["python"]]
    for params, langs in per_config.items():
        assert (json.loads(params)["language"] or "python") == langs[0]
    # every token's node is the node of its file in ast_nodes: same type and category
    bad = con.execute("""SELECT count(*) FROM ast_tokens t LEFT JOIN ast_nodes n USING (run_id, file_id, node_id)
                         WHERE t.node_id >= 0 AND (n.type IS DISTINCT FROM t.type OR n.category IS DISTINCT FROM t.category)
                      """).fetchone()[0]
    assert bad == 0
    n_rollouts = con.execute("SELECT count(*) FROM rollouts WHERE run_id = 'c'").fetchone()[0]
    assert con.execute("SELECT count(*) FROM ast_files WHERE run_id = 'c'").fetchone()[0] == 2 * n_rollouts


def test_an_explicit_language_parses_unfenced_completions_of_file_sources_whole(tmp_path):
    src = tmp_path / "tasks.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("def add(a, b):", "x = [1, 2", "print(")))
    lake = Lake(str(tmp_path / "lake"))
    params = SamplingParams(n=2, temperature=1.0, max_tokens=32, seed=3)
    for shard in prompts.load_and_shard(lake, "f", [SourceConfig(path=str(src))], 64):
        verify.verify_and_commit(lake, "f", shard, generate.generate_shard(lake, "f", shard, "hf", "tiny-small", params))
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM rollouts WHERE world IS NULL AND completion NOT LIKE '%```%'").fetchone()[0] == 6
    _label(lake, "f", None)  # no language given: prose or code, nobody knows
    assert not lake.files("ast_files", "f")
    _label(lake, "f", "python")
    con = connect(lake)
    files = con.execute("SELECT rollout_id, block, char_start, language FROM ast_files").fetchall()
    assert len(files) == 6 and {(b, c, lang) for _, b, c, lang in files} == {(0, 0, "python")}
    covered = con.execute("SELECT count(*) FROM ast_tokens").fetchone()[0]
    visible = con.execute("SELECT count(*) FROM tokens WHERE char_end > char_start").fetchone()[0]
    assert covered == visible > 0


def test_an_explicit_language_leaves_the_prose_of_built_in_worlds_alone():
    rollouts = pa.table({"rollout_id": ["b", "f"], "world": ["bios", None],
                         "completion": ["Mira Tolven was born in 1962.", "x = 1"]})
    tokens = pa.table({"rollout_id": ["b", "f"], "pos": [0, 0], "char_start": [0, 0], "char_end": [4, 1]})
    files, _, toks = AstLabeler(AstConfig(language="python")).label(rollouts, tokens)
    assert files.column("rollout_id").to_pylist() == ["f"] and toks.column("rollout_id").to_pylist() == ["f"]


def test_humaneval_continuations_and_chat_replies_are_python():
    body = "    total = 0\n    for x in xs:\n        total += x\n    return total\n"
    chat = "Here:\n```\ndef f(xs):\n    return sum(xs)\n```"
    rollouts = pa.table({"rollout_id": ["base", "chat"], "world": ["humaneval", "humaneval"], "completion": [body, chat]})
    tokens = pa.table({"rollout_id": ["base", "chat"], "pos": [0, 0], "char_start": [4, 10], "char_end": [9, 13]})
    files, _, toks = AstLabeler().label(rollouts, tokens)
    assert files.column("language").to_pylist() == ["python", "python"] and files.column("errors").to_pylist() == [0, 0]
    got = {r["rollout_id"]: r["type"] for r in toks.to_pylist()}
    assert got == {"base": "identifier", "chat": "function_definition"}
