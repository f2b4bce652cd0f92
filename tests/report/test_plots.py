"""The report step's plots: what each draws from, and that the files are real images."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.report.plots import label_panels, roc_curve, write_report
from tokenmill.schema import ROUTING_EVAL
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.metrics import roc_auc


def test_roc_curve_on_a_hand_worked_case():
    # thresholds 0.9 (tp 1, fp 0), 0.8 (tie: tp 2, fp 1), 0.1 (tp 2, fp 2)
    fpr, tpr = roc_curve(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 0, 1, 0]))
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1]
    # the area under it is the Mann–Whitney AUC (ties count one half)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 0, 1, 0])))


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


@pytest.mark.slow
def test_demo_run_gets_accuracy_label_and_probe_plots(demo_lake, tmp_path):
    lake = Lake(str(demo_lake))
    written = write_report(lake, "demo", tmp_path / "demo")
    assert set(written) == {"accuracy", "labels", "probe_roc"}  # no routing evaluation in this run
    for paths in written.values():
        png, svg = paths
        assert _is_png(png)
        assert ET.parse(svg).getroot().tag.endswith("svg")
    titles = [t for t, _, _ in label_panels(lake, "demo")]
    assert titles[:2] == ["logprob", "entropy"]
    assert {"DPO implicit reward", "GRPO advantage", "critical weight (cDPO)", "hallucination span risk",
            "hallucination span label", "AST category"} <= set(titles)
    assert "routing class (R2R)" not in titles
    route = write_report(lake, "demo-route", tmp_path / "route")
    assert "labels" in route
    assert "routing class (R2R)" in [t for t, _, _ in label_panels(lake, "demo-route")]


def test_histograms_hold_every_value_of_a_small_run(labelled):
    panels = {t: d for t, k, d in label_panels(labelled, "r1")}
    tokens = labelled.read("tokens", "r1")
    assert len(panels["logprob"]) == tokens.num_rows
    assert np.sort(panels["logprob"]) == pytest.approx(np.sort(tokens.column("logprob").to_numpy()), abs=1e-6)
    assert np.all(panels["GRPO advantage"] == 0.5)  # the fixture's grpo reward


def test_routing_curve_is_drawn_from_routing_eval(copy_lake, tmp_path):
    lake = Lake(str(copy_lake))
    rows = [("small-only", None, 0.0, 0.4), ("large-only", None, 1.0, 0.8), ("router", 0.5, 0.2, 0.6),
            ("router", 0.2, 0.4, 0.7), ("random", 0.2, 0.2, 0.45)]
    n = len(rows)
    lake.commit("routing_eval", "r1", pa.table({
        "eval_id": ["e"] * n, "router_id": ["rt"] * n, "policy": [r[0] for r in rows],
        "threshold": pa.array([r[1] for r in rows], pa.float32()), "large_share": pa.array([r[2] for r in rows], pa.float32()),
        "accuracy": pa.array([r[3] for r in rows], pa.float32()), "prompts": pa.array([10] * n, pa.int32()),
        "tokens": pa.array([100] * n, pa.int64()), "world": ["arithmetic"] * n, "split": ["test"] * n,
        "small_model": ["tiny-small"] * n, "large_model": ["tiny-large"] * n,
        "created_at": pa.array([datetime.now(timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
    }, schema=ROUTING_EVAL.schema))
    written = write_report(lake, "r1", tmp_path)
    assert "routing" in written and _is_png(written["routing"][0])
    assert "probe_roc" not in written


def test_redrawing_an_unchanged_run_rewrites_no_file(labelled, tmp_path):
    first = write_report(labelled, "r1", tmp_path)
    stats = {p: p.stat().st_mtime_ns for paths in first.values() for p in paths}
    second = write_report(labelled, "r1", tmp_path)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in stats} == stats
    assert not list(tmp_path.glob(".*.tmp"))
