"""The `efficacy` flow: one `pipeline` subflow per seed, then the summary and its plot.

  per seed s   pipeline <run_prefix>-s<s>: rollouts (sampling seed s) → labels (contrast
               models seed s) → every arm curated and trained (training seed s) → greedy
               accuracy on the same held-out prompts (`model_eval`)
  summary      per arm: mean accuracy with its 95 % t interval; the paired difference to its
               sequence-level counterpart and to the base model, with 95 % t intervals
               (`studies/efficacy.py`)
  plot         `efficacy.png` / `.svg` under the lake's reports, `<lake>/_reports/<run_prefix>/`

Every pipeline is idempotent, so a re-run (or one more seed) does only what is missing.

With `parallel` > 1 the seeds' pipelines run that many at once, each in a worker process of
Prefect's ProcessPoolTaskRunner with max(1, ⌊cores / workers⌋) torch threads, reporting to
this flow's Prefect API (subflows of one task run per seed). The tiny models' ops are too
small to keep two threads busy, so two single-threaded seeds finish sooner than two seeds in
turn; five at once on 2 cores sooner still (no seed alone at the end, and one worker's waits
on the API and the lake fill with another's work — docs/BENCHMARKS.md). Results may differ
from a sequential run's in the last float bits (another thread count sums in another order),
and so, rarely, in a greedy answer.
"""

from __future__ import annotations

import os
import time

from prefect import flow, task

from tokenmill.config import PipelineConfig
from tokenmill.flows.pipeline import pipeline_flow
from tokenmill.report import artifacts
from tokenmill.studies.efficacy_config import EfficacyConfig


def _torch_threads(n: int) -> None:
    """A seed worker's initializer: its torch thread count."""
    import torch

    torch.set_num_threads(n)


@task(name="seed", task_run_name="seed {cfg.sampling.seed}")
def seed_pipeline(cfg: PipelineConfig) -> dict:
    """One seed's pipeline, in a worker process (`parallel` > 1)."""
    # imported here: Prefect sends this task to the worker by value, and a flow sent along with it
    # would lose the module namespace its parameter annotations are resolved in
    from tokenmill.flows.pipeline import pipeline_flow as in_worker

    return in_worker(cfg)


def run_seeds(configs: list[PipelineConfig], parallel: int) -> list[tuple[int, dict]]:
    """(seed, pipeline output) of every config: in turn, or `parallel` at once in worker
    processes that report to this flow's Prefect API."""
    if parallel <= 1 or len(configs) <= 1:
        return [(c.sampling.seed, pipeline_flow(c)) for c in configs]
    from prefect.client.orchestration import get_client
    from prefect.task_runners import ProcessPoolTaskRunner

    before = os.environ.get("PREFECT_API_URL")
    with get_client(sync_client=True) as client:  # a temporary server's too: the workers must not start their own
        os.environ["PREFECT_API_URL"] = str(client.api_url).rstrip("/")
    workers = min(parallel, len(configs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    try:
        with ProcessPoolTaskRunner(max_workers=workers, initializer=_torch_threads, initargs=(threads,)) as runner:
            futures = [runner.submit(seed_pipeline, {"cfg": c}) for c in configs]
            return [(c.sampling.seed, f.result()) for c, f in zip(configs, futures)]
    finally:  # a temporary server stops with this flow: later flows of this process must not look for it
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@flow(name="efficacy", flow_run_name="efficacy {cfg.run_prefix}", log_prints=True)
def efficacy_flow(cfg: EfficacyConfig) -> dict:
    """Run the study's pipelines and summarise them; returns results, summary and plot paths."""
    from tokenmill.report.plots import plot_efficacy, report_dir
    from tokenmill.storage.lake import Lake
    from tokenmill.studies.efficacy import configs_for, results_of, summarise

    t0 = time.time()
    configs = configs_for(cfg)
    results = results_of(run_seeds(configs, cfg.parallel))
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
