"""The `efficacy` flow: one `pipeline` subflow per seed, then the summary and its plot.

  per seed s   pipeline <run_prefix>-s<s>: rollouts (sampling seed s) → labels (contrast
               models seed s) → every arm curated and trained (training seed s) → greedy
               accuracy on the same held-out prompts (`model_eval`)
  summary      per arm: mean accuracy with its 95 % t interval; the paired difference to its
               sequence-level counterpart and to the base model, with 95 % t intervals
               (`studies/efficacy.py`)
  plot         `efficacy.png` / `.svg` under the lake's reports, `<lake>/_reports/<run_prefix>/`

Every pipeline is idempotent, so a re-run (or one more seed) does only what is missing.
"""

from __future__ import annotations

import time

from prefect import flow

from tokenmill.flows.pipeline import pipeline_flow
from tokenmill.report import artifacts
from tokenmill.studies.efficacy_config import EfficacyConfig


@flow(name="efficacy", flow_run_name="efficacy {cfg.run_prefix}", log_prints=True)
def efficacy_flow(cfg: EfficacyConfig) -> dict:
    """Run the study's pipelines and summarise them; returns results, summary and plot paths."""
    from tokenmill.report.plots import plot_efficacy, report_dir
    from tokenmill.storage.lake import Lake
    from tokenmill.studies.efficacy import configs_for, results_of, summarise

    t0 = time.time()
    configs = configs_for(cfg)
    results = results_of([(c.sampling.seed, pipeline_flow(c)) for c in configs])
    summary = summarise(results)
    out_dir = report_dir(Lake(cfg.lake), cfg.run_prefix)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = f" on {cfg.teacher}'s rollouts" if cfg.teacher else ""
    plot = plot_efficacy(results, summary, out_dir, f"{cfg.run_prefix}: {cfg.policy}{data}, {len(cfg.seeds)} seeds, "
                                                    f"{cfg.eval_prompts} held-out prompts (95 % t intervals)")
    out = {"lake": cfg.lake, "run_prefix": cfg.run_prefix, "policy": cfg.policy, "teacher": cfg.teacher, "seeds": cfg.seeds,
           "runs": [c.run_id for c in configs], "results": results.to_pylist(), "summary": summary.to_pylist(),
           "plot": [str(p) for p in plot], "seconds": round(time.time() - t0, 1)}
    artifacts.efficacy_summary(out)
    return out
