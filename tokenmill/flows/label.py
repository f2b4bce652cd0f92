"""The `label` flow: score what is missing, then run labelers over a run's rollouts.

  prepare   ×L   run-level work of each labeler (critical: train or find pos/neg models;
                 routing: refuse small/large pairs with different tokenizers)
  score     ×S   each rollouts shard under every role a labeler needs (missing rows only),
                 with exact entropy only where a labeler needs it (`entropy_needs`)
  label     ×S×L one labeler on one shard; a finished (labeler config, shard) is skipped

Shards are the run's committed `rollouts` files (each holds whole prompt groups). Tasks
pass the config, shard paths and counts; every result is a lake table.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from tokenmill.config import LabelConfig
from tokenmill.engines import check_engine
from tokenmill.errors import EngineError, TokenmillError
from tokenmill.flows.rollouts import _retry_unless_user_error
from tokenmill.flows.naming import run_name
from tokenmill.flows.report import report_task
from tokenmill.flows.runners import model_tasks, on_ray, timed
from tokenmill import progress
from tokenmill.report import artifacts
from tokenmill.storage.lake import Lake, check_run_id
from tokenmill.tasks import score as score_stage
from tokenmill.labelers import build_labeler
from tokenmill.labelers.base import entropy_needs


def check_label_run(cfg: LabelConfig) -> list[str]:
    """The run's rollouts shards; every labeler, role and engine checked before any work."""
    check_run_id(cfg.run_id)
    check_engine(cfg.engine, cfg.engine_options)
    lake = Lake(cfg.lake)
    labelers = [build_labeler(name, cfg) for name in cfg.labelers]
    for lab in labelers:
        lab.roles()  # a missing role → clear error now
    shards = lake.files("rollouts", cfg.run_id)
    if not shards:
        runs = lake.runs("rollouts")
        raise TokenmillError(f"run {cfg.run_id!r} has no rollouts in {cfg.lake}",
                             fix=f"runs there: {', '.join(runs[-5:])}" if runs else "run `tokenmill run` or `tokenmill demo` first")
    check_engine_gives(cfg, labelers, lake)
    return shards


def check_engine_gives(cfg: LabelConfig, labelers: list, lake: Lake) -> None:
    """Refuse a scoring engine that cannot give what a requested label needs (vLLM: no exact
    entropy, no hidden states), naming the label and the options that avoid it."""
    if score_stage.engine_gives_entropy(cfg.engine):
        return
    if cfg.hidden_layer is not None and score_roles(cfg):
        raise EngineError(f"--hidden-layer {cfg.hidden_layer} needs hidden states, which the {cfg.engine} engine "
                          "cannot give", fix="label with --engine hf, or leave out --hidden-layer")
    needs = entropy_needs(labelers)
    if needs and not score_stage.tokens_have_entropy(lake, cfg.run_id):  # generation gave none either
        drop = [hint for lab in labelers if lab.needs_entropy and (hint := lab.without_entropy())]
        names = ", ".join(needs)
        raise EngineError(f"{names} need{'s' if len(needs) == 1 else ''} exact entropy, which the {cfg.engine} engine "
                          f"cannot give (nor do the run's tokens have it)",
                          fix="label with --engine hf" + (f", or leave {'it' if len(needs) == 1 else 'them'} out: "
                                                          f"{' '.join(drop)}" if drop else ""))


def score_entropy(cfg: LabelConfig, lake: Lake | None = None) -> bool | None:
    """What the score stage asks the engine for: exact entropy (True) where a requested label
    needs it and the run's tokens lack it; else None, entropy only where the engine gives it
    anyway (hf, at no cost; vLLM cannot: `scores.entropy` is then null)."""
    labelers = [build_labeler(name, cfg) for name in cfg.labelers]
    if entropy_needs(labelers) and not score_stage.tokens_have_entropy(lake or Lake(cfg.lake), cfg.run_id):
        return True
    return None


def score_roles(cfg: LabelConfig) -> dict[str, str]:
    roles = {}
    for name in cfg.labelers:
        roles.update(build_labeler(name, cfg).roles())
    for role in cfg.score_roles:
        roles[role] = score_stage.POLICY if role == "policy" else cfg.models[role]
    return roles


@task(name="prepare-labeler", cache_policy=NONE, retry_condition_fn=_retry_unless_user_error, retries=1,
      task_run_name="prepare {name}")
def prepare_labeler(cfg: LabelConfig, name: str) -> dict:
    return build_labeler(name, cfg).prepare(Lake(cfg.lake), cfg.run_id)


@task(name="score-shard", cache_policy=NONE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_retry_unless_user_error, task_run_name=run_name("score {shard}"))
def score_shard(cfg: LabelConfig, shard: str, roles: dict[str, str], entropy: bool | None = None) -> dict:
    out = score_stage.score_shard(Lake(cfg.lake), cfg.run_id, shard, roles, cfg.engine, cfg.engine_options,
                                  hidden_layer=cfg.hidden_layer, entropy=entropy)
    progress.advance("score")
    return out


@task(name="label-shard", cache_policy=NONE, retries=1, retry_condition_fn=_retry_unless_user_error,
      task_run_name=run_name("{name} {shard}"))
def label_shard(cfg: LabelConfig, name: str, shard: str) -> dict:
    # a labeler that needs its `prepare` results finds them again (prepare is idempotent and
    # cheap once done), so this task runs on any machine that sees the lake
    out = build_labeler(name, cfg).label_shard(Lake(cfg.lake), cfg.run_id, shard)
    progress.advance(f"label {name}")
    return out


def run_tokens(lake: Lake, run_id: str) -> int:
    """Completion tokens of a run, from the Parquet footers of its token files (no data read)."""
    import pyarrow.parquet as pq

    n = 0
    for f in lake.files("tokens", run_id):
        with lake.fs.open_input_file(f) as fh:
            n += pq.ParquetFile(fh).metadata.num_rows
    return n


def label_work(tokens: int, labelers: list[str]) -> int:
    """Most token passes of labelling `tokens` tokens (the flow timeout's work): scoring,
    plus a few passes per labeler."""
    return tokens * (1 + 3 * len(labelers))


@flow(name="label", flow_run_name="label {cfg.run_id}", log_prints=True)
def label_flow(cfg: LabelConfig) -> dict:
    """Score what is missing, then label every shard of a run with each labeler."""
    t0 = time.time()
    shards = check_label_run(cfg)
    get_run_logger().info("run %s: %d shards, labelers %s", cfg.run_id, len(shards), ", ".join(cfg.labelers))
    # timeouts from the run's token count: a labeler's prepare may train on every token (a
    # few passes), a shard's scoring or labelling passes over its tokens once per model
    total = run_tokens(Lake(cfg.lake), cfg.run_id)
    per_shard = 2 * total / max(1, len(shards))  # shards differ in completion length
    prepare = timed(prepare_labeler, cfg.runner, 4 * total)
    roles = score_roles(cfg)
    score, label = timed(score_shard, cfg.runner, per_shard * max(1, len(roles))), timed(label_shard, cfg.runner, 3 * per_shard)
    prepared = dict(zip(cfg.labelers, model_tasks(cfg.runner, [(prepare, (cfg, n), {}) for n in cfg.labelers])))
    entropy = score_entropy(cfg) if roles else None
    if roles:
        progress.start("score", len(shards))
    for name in cfg.labelers:
        progress.start(f"label {name}", len(shards))
    written: dict[str, int] = {}

    def add(name: str, out: dict) -> None:
        for table, n in out.items():
            written[f"{name}:{table}"] = written.get(f"{name}:{table}", 0) + n

    if on_ray():  # all shards scored across the cluster, then all (labeler, shard) pairs
        if roles:
            model_tasks(cfg.runner, [(score, (cfg, shard, roles, entropy), {}) for shard in shards])
        jobs = [(name, shard) for shard in shards for name in cfg.labelers]
        for (name, _), out in zip(jobs, model_tasks(cfg.runner, [(label, (cfg, n, s), {}) for n, s in jobs])):
            add(name, out)
    else:  # one engine uses every core: a shard at a time
        for shard in shards:
            if roles:
                score(cfg, shard, roles, entropy)
            for name in cfg.labelers:
                add(name, label(cfg, name, shard))
    artifacts.label_summary(cfg.lake, cfg.run_id, cfg.labelers)
    report_task(cfg.lake, cfg.run_id)
    return {"run_id": cfg.run_id, "lake": cfg.lake, "shards": len(shards), "rows": written, "prepared": prepared,
            "seconds": round(time.time() - t0, 1)}
