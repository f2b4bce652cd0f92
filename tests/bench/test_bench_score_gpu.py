"""Smoke test of bench/bench_score_gpu.py: the --tiny run as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_score_gpu.py"


def test_tiny_run_writes_sane_json(tmp_path):
    out = tmp_path / "score.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--repeats", "1", "--device", "cpu",
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["tokens_per_s"] > 0 and res["completion_tokens_per_s"] > 0
    assert res["tokens"] > res["completion_tokens"] > 0
    assert 0 < res["mfu"] < 1
    assert "ratio" in res and res["ratio"] > 0
    assert res["naive_max_abs_diff"] < 1e-3  # float32 on cpu: batched and per-rollout scores agree
    assert res["fused_tokens_per_s"] > 0 and res["fused_ratio"] > 0  # the fused head, timed in the same run
    assert res["fused_max_abs_diff"] < 1e-4 and res["fused_entropy_max_abs_diff"] < 1e-4


def test_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for opt in ("--sequences", "--repeats", "--token-budget", "--peak-tflops", "--tiny", "--json"):
        assert opt in proc.stdout
