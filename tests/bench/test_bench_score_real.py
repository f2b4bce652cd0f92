"""Smoke test of bench/bench_score_real.py: the --quick run on tiny-small as a user runs it, in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_score_real.py"


def test_quick_run_prints_both_tables():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--model", "tiny-small"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "**fixed**" in out and "**mix**" in out
    for side in ("ceiling", "tokenmill (logprob, entropy, top-5)", "tokenmill lite (logprob only)",
                 "tokenmill, fused head", "tokenmill, packed"):
        assert out.count(f"| {side} |") == 2
    assert "vllm" not in out  # --quick leaves vLLM out
    # same tokens, same model, float32: tokenmill and the bare forward agree
    diffs = [float(d) for d in re.findall(r"max \|Δ logprob\| tokenmill vs ceiling ([0-9.e+-]+)", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-4
    for label in ("fused head", "packed"):  # the new paths score the same tokens the same
        diffs = [float(d) for d in re.findall(rf"max \|Δ logprob\| {label} vs ceiling ([0-9.e+-]+)", out)]
        assert len(diffs) == 2 and max(diffs) < 1e-4, label


def test_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for opt in ("--model", "--sets", "--repeat", "--quick", "--vllm", "--token-budget", "--ceiling-budget"):
        assert opt in proc.stdout
