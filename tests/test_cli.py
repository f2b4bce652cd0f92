"""The `tokenmill` command as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tokenmill import datasets as D
from tokenmill.storage.lake import Lake


def tokenmill(*args, block_vllm: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    boot = "import sys; sys.modules['vllm'] = None; " if block_vllm else ""  # as if vLLM were not installed
    code = f"{boot}sys.argv = ['tokenmill'] + {list(args)!r}; from tokenmill.cli import main; main()"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_fails(result, *needles):
    assert result.returncode != 0, result.stdout
    message = result.stderr.strip()
    assert "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message


def assert_lake_untouched(lake):
    assert not lake.exists() or not any(p.is_file() for p in lake.rglob("*")), list(lake.rglob("*"))


@pytest.fixture
def jsonl(tmp_path):
    def write(lines: list[str], name="prompts.jsonl"):
        path = tmp_path / name
        path.write_text("".join(line + "\n" for line in lines))
        return path

    return write


def test_malformed_jsonl_line_names_file_and_line(jsonl, lake_dir):
    path = jsonl(['{"prompt": "a"}', '{"prompt": "b"}', '{"prompt": "c"'])
    r = tokenmill("run", "--source", str(path), "--lake", str(lake_dir))
    assert_fails(r, "prompts.jsonl:3", "not valid JSON")
    assert_lake_untouched(lake_dir)


def test_missing_field_names_line_field_and_fix(jsonl, lake_dir):
    path = jsonl(['{"question": "a"}', '{"other": "b"}'])
    r = tokenmill("run", "--source", str(path), "--prompt-field", "question", "--lake", str(lake_dir))
    assert_fails(r, "prompts.jsonl:2", "question", "--prompt-field")
    assert_lake_untouched(lake_dir)


def test_empty_source_is_refused(jsonl, lake_dir):
    r = tokenmill("run", "--source", str(jsonl([])), "--lake", str(lake_dir))
    assert_fails(r, "empty")
    assert_lake_untouched(lake_dir)


def test_missing_model_path_is_refused(lake_dir, tmp_path):
    r = tokenmill("run", "--world", "arithmetic", "--model", str(tmp_path / "no-model"), "--lake", str(lake_dir))
    assert_fails(r, "no model at", "tiny-small")
    assert_lake_untouched(lake_dir)


def test_vllm_engine_without_vllm_says_how_to_install(lake_dir):
    r = tokenmill("run", "--world", "arithmetic", "--engine", "vllm", "--lake", str(lake_dir), block_vllm=True)
    assert_fails(r, "vLLM", "pip install 'tokenmill[vllm]'", "--engine hf")
    assert_lake_untouched(lake_dir)


def test_unknown_world_lists_the_worlds(lake_dir):
    r = tokenmill("run", "--world", "chess", "--lake", str(lake_dir))
    assert_fails(r, "unknown world 'chess'", "arithmetic, code, bios")
    assert_lake_untouched(lake_dir)


def _commands(group, path=()):
    """Every command path of the CLI, read from the app itself (a new command is covered unlisted)."""
    yield list(path)
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _commands(cmd, (*path, name))


def test_every_command_has_help():
    import typer

    from tokenmill.cli import app

    cmds = list(_commands(typer.main.get_command(app)))
    assert ["study", "oracle"] in cmds and ["ast", "export-mlcpd"] in cmds and len(cmds) > 20
    for cmd in cmds:
        r = tokenmill(*cmd, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout, (cmd, r.stderr)


@pytest.mark.slow
def test_run_from_jsonl_then_query_with_sql(jsonl, lake_dir, tmp_path):
    path = jsonl([json.dumps({"q": f"Compute step by step: start with {i}, add 1.\n", "a": str(i + 1)}) for i in range(3)])
    r = tokenmill("run", "--source", str(path), "--prompt-field", "q", "--reference-field", "a",
                  "--run-id", "files", "-n", "2", "--max-tokens", "32", "--lake", str(lake_dir))
    assert r.returncode == 0, r.stderr
    assert "files" in r.stdout and "accuracy" in r.stdout
    rollouts = Lake(lake_dir).read("rollouts")
    assert rollouts.num_rows == 6 and set(rollouts.column("verifier").to_pylist()) == {"reference-match"}

    r = tokenmill("sql", "SELECT count(*) AS n FROM tokens WHERE run_id = 'files'", "--lake", str(lake_dir), "-f", "csv")
    assert r.returncode == 0 and r.stdout.splitlines()[1] == str(sum(rollouts.column("num_tokens").to_pylist()))
    r = tokenmill("sql", "SELECT rollout_id, verdict FROM rollouts", "--lake", str(lake_dir), "-f", "json")
    assert [json.loads(line)["verdict"] for line in r.stdout.splitlines()].count(None) == 0
    out = tmp_path / "r.parquet"
    r = tokenmill("sql", "SELECT * FROM prompts", "--lake", str(lake_dir), "-f", "parquet", "--out", str(out))
    assert r.returncode == 0 and out.stat().st_size > 0
    assert_fails(tokenmill("sql", "DROP VIEW tokens", "--lake", str(lake_dir)), "read-only")
    assert_fails(tokenmill("sql", "SELECT nope FROM rollouts", "--lake", str(lake_dir)), "nope")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_prints_the_summary(tmp_path):
    lake = tmp_path / "demo-lake"
    r = tokenmill("demo", "--lake", str(lake), "--prompts", "4", "--samples", "2", "--route-prompts", "128",
                  "--real-prompts", "2")
    assert r.returncode == 0, r.stderr
    # the real model's stage: its prompts went in with the ChatML template and were labelled
    assert "smollm2-135m" in r.stdout and "<|im_start|>user" in r.stdout and "labels of run demo-smollm2" in r.stdout
    real = Lake(lake).read("rollouts", "demo-smollm2").to_pylist()
    assert len(real) == 2 * 2 * 2 and all(x["prompt_token_ids"][0] == 1 for x in real)
    for needle in ("arithmetic", "code", "bios", "tiny-small", "tiny-large", "accuracy", "tokenmill sql",
                   "labels of run demo", "rewards", "tempo", "routing labels", "identical", "divergent",
                   "routed generation", "large-only", "random", "hallucination spans by label", "not_supported", "generated code tokens by AST category",
                   "identifier"):
        assert needle in r.stdout
    assert Lake(lake).read("rollouts", "demo").num_rows == 3 * 4 * 2 * 2
    assert Lake(lake).read("rollouts", "demo-route").num_rows == 128
    # it ends the way the pipeline does: a token-weighted dataset, a short training of one arm
    # (sft-reward: tiny-small's arithmetic rollouts weighted max(A_grpo, 0)) and its held-out evaluation
    assert "held-out arithmetic accuracy" in r.stdout and "sft-reward" in r.stdout
    evals = Lake(lake).read("model_eval", "demo").to_pylist()
    assert sorted(e["arm"] or "base" for e in evals) == ["base", "sft-reward"] and all(e["prompts"] == 64 for e in evals)
    metrics = Lake(lake).read("train_metrics", "demo").to_pylist()
    assert metrics and max(m["step"] for m in metrics) == 20
    (manifest,) = [D.read_manifest(Lake(lake), m["dataset_id"]) for m in metrics[:1]]
    assert manifest["recipe"] == "weighted-sft" and manifest["runs"] == ["demo"] and manifest["rows"] == 4 * 2
    # the printed query for the most critical tokens runs as printed
    from tokenmill.report.summary import TOP_CRITICAL_SQL

    r = tokenmill("sql", TOP_CRITICAL_SQL.format(run="demo"), "--lake", str(lake), "-f", "json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(0 <= row["p_ce"] <= 1 and row["up_to_token"].endswith(row["token"]) for row in rows)


def test_label_command_labels_a_run_and_refuses_a_missing_one(copy_lake):
    r = tokenmill("label", "--run", "r1", "--lake", str(copy_lake), "--labelers", "rewards", "--kinds", "grpo,tempo,entropy")
    assert r.returncode == 0, r.stderr
    assert "grpo" in r.stdout and "tempo" in r.stdout
    assert {row["kind"] for row in Lake(copy_lake).read("token_rewards").to_pylist()} == {"grpo", "tempo", "entropy"}
    assert_fails(tokenmill("label", "--run", "nope", "--lake", str(copy_lake)), "run 'nope' has no rollouts", "r1")
    assert_fails(tokenmill("label", "--run", "r1", "--lake", str(copy_lake), "--kinds", "ppo"), "unknown reward kind 'ppo'")


def test_check_reports_a_corrupted_file_and_exits_nonzero(lake_dir):
    from tokenmill.sources import Prompt, prompts_table

    lake = Lake(lake_dir)
    lake.commit("prompts", "r", prompts_table([Prompt(source="s", prompt="p")]))
    r = tokenmill("check", "--lake", str(lake_dir))
    assert r.returncode == 0 and "no problems" in r.stdout
    r = tokenmill("check", "--deep", "--lake", str(lake_dir))
    assert r.returncode == 0 and "no problems" in r.stdout
    with open(lake.files("prompts")[0], "r+b") as fh:  # clobber the Parquet footer
        fh.seek(-12, 2)
        fh.write(b"\0" * 12)
    r = tokenmill("check", "--lake", str(lake_dir))
    assert r.returncode == 1 and "unreadable" in r.stdout, r.stdout


def test_unknown_engine_option_is_refused_before_any_write(lake_dir):
    r = tokenmill("run", "--world", "arithmetic", "--engine-option", "batch_sise=8", "--lake", str(lake_dir))
    assert_fails(r, "unknown hf engine option(s): batch_sise", "batch_size")
    assert_lake_untouched(lake_dir)
    assert_fails(tokenmill("run", "--world", "arithmetic", "--engine-option", "nokey", "--lake", str(lake_dir)),
                 "KEY=VALUE")


def test_ast_parse_command_parses_a_tree_and_prints_a_table(tmp_path, lake_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def f():\n    return 1\n")
    (src / "b.java").write_text("class B { }\n")
    (src / "c.py").write_bytes(b"\x00binary")
    r = tokenmill("ast", "parse", str(src), "--lake", str(lake_dir), "--run-id", "corpus")
    assert r.returncode == 0, r.stderr
    assert "python" in r.stdout and "java" in r.stdout and "skipped" in r.stdout
    assert Lake(lake_dir).read("ast_files", "corpus").num_rows == 3
    assert_fails(tokenmill("ast", "parse", str(tmp_path / "nope"), "--lake", str(lake_dir)), "no such file or directory")


def test_curate_command_writes_a_dataset_and_refuses_bad_params(copy_lake):
    r = tokenmill("curate", "--recipe", "weighted-sft", "--run", "r1", "--lake", str(copy_lake),
                  "--param", "weight=1.0", "--param", "where=verdict = 'correct'")
    assert r.returncode == 0, r.stderr
    assert "dataset" in r.stdout and "rows" in r.stdout
    assert any(p.name == "manifest.json" for p in (copy_lake / "_datasets").rglob("manifest.json"))
    assert_fails(tokenmill("curate", "--recipe", "weighted-sft", "--run", "r1", "--lake", str(copy_lake),
                           "--param", "nope=1"), "unknown parameter")
    assert_fails(tokenmill("curate", "--recipe", "magic", "--run", "r1", "--lake", str(copy_lake)), "unknown recipe")


def test_pipeline_command_refuses_bad_arms_before_touching_the_lake(tmp_path):
    lake = tmp_path / "lake"
    assert_fails(tokenmill("pipeline", "--lake", str(lake), "--arm", "ppo"), "unknown arm")
    assert_fails(tokenmill("pipeline", "--lake", str(lake), "--run", "bad run!"), "run id")
    assert not lake.exists()


def test_label_shows_the_critical_tokens_only_after_critical_ran(labelled):
    # the run already has `critical` rows; labelling rewards alone must not print their hints
    r = tokenmill("label", "--run", "r1", "--labelers", "rewards", "--kinds", "grpo", "--lake", str(labelled.uri))
    assert r.returncode == 0, r.stderr
    assert "labels of run r1" in r.stdout and "most critical tokens" not in r.stdout
