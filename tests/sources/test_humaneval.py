"""The `humaneval` source: the packaged problems, completion → program, verification in the
sandbox, and the official harness's verdicts on the same completions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tokenmill.config import SourceConfig
from tokenmill.sources import build_source
from tokenmill.sources.worlds.humaneval import HumanEvalWorld, harness_completion, problems

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_humaneval_agreement.py"


def _prompt(task_index: int):
    return build_source(SourceConfig(path="humaneval", limit=task_index + 1)).load()[task_index]


def test_the_source_is_the_164_problems_in_file_order():
    assert len(problems()) == 164
    prompts = build_source(SourceConfig(path="humaneval")).load()
    assert len(prompts) == 164 and prompts[0].meta["task_id"] == "HumanEval/0"
    assert {p.world for p in prompts} == {"humaneval"} and {p.split for p in prompts} == {"test"}
    five = build_source(SourceConfig(path="humaneval", limit=5)).load()
    assert [p.prompt for p in five] == [p["prompt"] for p in problems()[:5]]
    assert set(five[0].meta) == {"task_id", "entry_point", "test"}


def test_humaneval_has_no_train_split():
    from tokenmill.errors import SourceError

    with pytest.raises(SourceError, match="no train split"):
        HumanEvalWorld().instances(3, split="train")


def test_a_continuation_is_cut_at_the_codex_stop_sequences():
    body, form = harness_completion("    return 1\n\ndef other():\n    pass\n", "f")
    assert (body, form) == ("    return 1\n", "continuation")
    assert harness_completion("    return 2\nif __name__ == '__main__':\n    f()", "f")[0] == "    return 2"
    assert harness_completion("    return 3\n", "f") == ("    return 3\n", "continuation")


def test_a_whole_function_is_taken_from_the_fence_that_defines_it():
    reply = "Sure!\n```python\nimport math\n```\nand\n```python\ndef f(x):\n    return x\n```\nDone."
    assert harness_completion(reply, "f") == ("\ndef f(x):\n    return x\n", "function")
    # unfenced whole function (a base model repeating the signature)
    assert harness_completion("def f(x):\n    return x\n", "f") == ("\ndef f(x):\n    return x\n", "function")
    # a fence without the entry point is still the code, read as a continuation
    assert harness_completion("```\n    return 0\n```", "f") == ("    return 0\n", "continuation")


@pytest.mark.parametrize("index", [0, 32, 38])
def test_canonical_solutions_pass_as_continuations_and_as_chat_replies(index):
    p, world = problems()[index], HumanEvalWorld()
    prompt = _prompt(index)
    assert world.verify(prompt, p["canonical_solution"]).verdict == "correct"
    # 32 (find_zero) calls the prompt's `poly`, 38 (decode_cyclic) its `encode_cyclic`: the
    # prompt's helpers stay defined when a reply redefines the entry point
    fenced = f"```python\n{p['prompt']}{p['canonical_solution']}```"
    v = world.verify(prompt, fenced)
    assert v.verdict == "correct" and v.reward == 1.0 and v.detail["form"] == "function"


def test_wrong_broken_and_endless_programs_fail():
    world, prompt = HumanEvalWorld(), _prompt(0)
    wrong = world.verify(prompt, "    return not True\n")
    assert (wrong.verdict, wrong.reward) == ("incorrect", 0.0)
    broken = world.verify(prompt, "    return (\n")
    assert broken.verdict == "invalid" and "SyntaxError" in broken.detail["error"]
    hostile = world.verify(prompt, "    import os\n    os._exit(0)\n")  # cannot end the test as a pass
    assert hostile.verdict == "incorrect"


@pytest.mark.slow
def test_verdicts_and_pass_at_1_equal_the_official_harness():
    proc = subprocess.run([sys.executable, str(BENCH), "--problems", "12", "--workers", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and ln[2].isdigit()][0].split("|")
    samples, agree, ours, theirs = int(row[1]), row[3].strip(), float(row[4]), float(row[5])
    assert samples == 12 * 4 + 2 and agree == f"{samples}/{samples}"
    # per problem: 2 passes (continuation, fenced function) of 4, or of 5 with the endless loop
    assert ours == theirs == pytest.approx((10 * 2 / 4 + 2 * 2 / 5) / 12, abs=1e-4)


@pytest.mark.slow
def test_smollm2_on_humaneval_reports_pass_at_k_the_official_harness_confirms(smollm2_dir, tmp_path):
    from test_cli import tokenmill

    from tokenmill.storage.lake import Lake

    lake = tmp_path / "lake"
    r = tokenmill("run", "--source", "humaneval", "--limit", "2", "-n", "2", "--temperature", "0.2", "--max-tokens", "96",
                  "--model", "smollm2-135m", "--run-id", "he", "--lake", str(lake))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pass@k" in r.stdout
    rows = Lake(lake).read("pass_at_k").to_pylist()
    assert [(x["source"], x["model"], x["k"], x["problems"], x["samples"]) for x in rows] == \
        [("humaneval", "smollm2-135m", 1, 2, 2)]
    rollouts = Lake(lake).read("rollouts", columns=["verifier", "verdict"]).to_pylist()
    assert {x["verifier"] for x in rollouts} == {"world:humaneval"} and len(rollouts) == 4
    assert rows[0]["correct"] == sum(x["verdict"] == "correct" for x in rollouts)
    proc = subprocess.run([sys.executable, str(BENCH), "--lake", str(lake), "--run", "he", "--workers", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]  # 0: every verdict equal
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| 4 |")]
    assert table and f"| {rows[0]['pass_at_k']:.4f} |" in table[0]
