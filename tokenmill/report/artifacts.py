"""Prefect artifacts: what each flow shows in the Prefect UI.

Every flow publishes, under a key made from the flow and its run id (so a re-run adds a
new version of the same artifact):

  rollouts   table `rollouts-<run>`: accuracy, reward, tokens per world × model
  label      table `labels-<run>`: per labeler output, rows, rollouts, mean value, flagged share
  curate     markdown `dataset-<id>`: recipe, rows, tokens, where the shards are
  train      markdown `model-<id>`: objective, loss, tokens, lineage
  evaluate   table `eval-<run>`: held-out accuracy per model
  pipeline   markdown `pipeline-<run>`: accuracy per arm and the commands to dig in
  progress   one progress artifact per long stage (`progress.py`)

Each markdown summary ends with the `tokenmill sql` commands that open the same data.
Outside a Prefect run (plain functions, tests) nothing is published. A failure to publish
is logged and never fails the flow: the lake, not the UI, holds the results.
"""

from __future__ import annotations

import json
import shlex

from tokenmill.prefect_ui import (  # noqa: F401  (artifact_key: for callers)
    artifact_key, in_prefect_run, json_rows, publish_markdown, publish_table)


# -------------------------------------------------------------------- markdown helpers


def md_table(rows: list[dict]) -> str:
    if not rows:
        return "_no rows_\n"
    cols = list(rows[0])

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def md_commands(commands: list[str]) -> str:
    return "\n**Dig in:**\n\n```bash\n" + "\n".join(commands) + "\n```\n"


def sql_command(lake: str, sql: str) -> str:
    return f'tokenmill sql --lake {shlex.quote(lake)} "{sql}"'


def view_command(lake: str, run_id: str) -> str:
    return f"tokenmill view --lake {shlex.quote(lake)} --run {shlex.quote(run_id)}"


# -------------------------------------------------------------------- per flow


def rollouts_summary(lake: str, run_id: str) -> None:
    if not in_prefect_run():
        return
    from tokenmill.report.summary import explore_hints, pass_at_k_summary, run_summary
    from tokenmill.storage.lake import Lake

    table = run_summary(Lake(lake), run_id)
    publish_table(artifact_key("rollouts", run_id), table, f"run {run_id}: accuracy, reward and tokens per world × model")
    passk = pass_at_k_summary(Lake(lake), run_id)
    passk_md = ""
    if passk.num_rows:
        publish_table(artifact_key("pass-at-k", run_id), passk, f"run {run_id}: pass@k per source × model")
        passk_md = "\n\n## pass@k (unbiased estimator, Chen et al. 2021)\n\n" + md_table(json_rows(passk))
    text = (f"# Rollouts of run `{run_id}`\n\nLake: `{lake}`\n\n" + md_table(json_rows(table)) + passk_md
            + md_commands([view_command(lake, run_id)] + explore_hints(lake, run_id)))
    publish_markdown(artifact_key("rollouts", run_id, "summary"), text, f"run {run_id}: rollouts summary")


def label_summary(lake: str, run_id: str, labelers: list[str]) -> None:
    if not in_prefect_run():
        return
    from tokenmill.report.summary import label_hints
    from tokenmill.report.summary import label_summary as summary
    from tokenmill.storage.lake import Lake

    table = summary(Lake(lake), run_id)
    publish_table(artifact_key("labels", run_id), table,
                  f"run {run_id}: per labeler output — rows, rollouts, mean value, flagged share")
    cmds = [view_command(lake, run_id),
            sql_command(lake, f"SELECT kind, count(*), avg(value) FROM token_rewards WHERE run_id = '{run_id}' GROUP BY kind")]
    if "critical" in labelers:
        cmds += label_hints(lake, run_id)
    text = (f"# Labels of run `{run_id}`\n\nLabelers: {', '.join(labelers)}. Lake: `{lake}`\n\n"
            + md_table(json_rows(table)) + md_commands(cmds))
    publish_markdown(artifact_key("labels", run_id, "summary"), text, f"run {run_id}: labels summary")


def dataset_summary(lake: str, manifest: dict) -> None:
    if not in_prefect_run():
        return
    did = manifest["dataset_id"]
    rows = [{k: manifest.get(k) for k in ("dataset_id", "recipe", "kind", "rows", "tokens")}]
    text = (f"# Dataset `{did}`\n\nRuns: {', '.join(manifest.get('runs', []))}. Parameters: `{manifest.get('params', {})}`\n\n"
            + md_table(rows) + md_commands([f"tokenmill train --lake {lake} --dataset {did} --objective "
                                          + ("dpo" if manifest.get("kind") == "pairs" else "sft")]))
    publish_markdown(artifact_key("dataset", did), text, f"dataset {did} ({manifest.get('recipe')})")


def model_summary(lake: str, out: dict, objective: str, weighting: str) -> None:
    if not in_prefect_run():
        return
    aid = out["artifact_id"]
    rows = [{"model": aid, "objective": objective, "weighting": weighting, "final_loss": out.get("final_loss"),
             "tokens": out.get("tokens"), "reused": out.get("reused")}]
    cmds = [sql_command(lake, f"SELECT step, loss, margin, tokens FROM train_metrics WHERE artifact_id = '{aid}' ORDER BY step"),
            sql_command(lake, f"SELECT artifact_id, role, base_model, lineage FROM model_artifacts WHERE artifact_id = '{aid}'")]
    text = f"# Model `{aid}`\n\nStored at `{out.get('local_path', '')}`\n\n" + md_table(rows) + md_commands(cmds)
    publish_markdown(artifact_key("model", aid), text, f"model {aid}: {objective}/{weighting}")


def eval_summary(lake: str, run_id: str, rows: list[dict]) -> None:
    keep = [{k: r.get(k) for k in ("arm", "model", "accuracy", "prompts")} for r in rows]
    publish_table(artifact_key("eval", run_id), keep, f"run {run_id}: greedy held-out accuracy per model")


def pipeline_summary(out: dict) -> None:
    if not in_prefect_run():
        return
    lake, run_id = out["lake"], out["run_id"]
    rows = [{"arm": e["arm"] or "base", "model": e["model"],
             "train rows": (out["arms"].get(e["arm"]) or {}).get("dataset_rows"),
             "accuracy": e["accuracy"], "prompts": e["prompts"]} for e in out["eval"]]
    cmds = [sql_command(lake, f"SELECT arm, model, accuracy, prompts FROM model_eval WHERE run_id = '{run_id}'"),
            sql_command(lake, f"SELECT objective, artifact_id, max(step), min(loss) FROM train_metrics "
                              f"WHERE run_id = '{run_id}' GROUP BY ALL")]
    text = (f"# Pipeline `{run_id}`\n\n{out['rollouts']} rollouts, {len(out['arms'])} arms, {out['seconds']:.0f} s. "
            f"Lake: `{lake}`\n\n" + md_table(rows) + md_commands(cmds))
    publish_markdown(artifact_key("pipeline", run_id), text, f"pipeline {run_id}: held-out accuracy per arm")


def efficacy_summary(out: dict) -> None:
    """Markdown `efficacy-<prefix>`: the study's summary table (paired 95 % intervals) and its plot."""
    if not in_prefect_run():
        return
    from pathlib import Path

    lake, prefix = out["lake"], out["run_prefix"]
    plot = " · ".join(f"[{Path(p).suffix[1:]}]({Path(p).resolve().as_uri()})" for p in out["plot"]) or "_not drawn_"
    runs = ", ".join(f"'{r}'" for r in out["runs"])
    text = (f"# Efficacy study `{prefix}`\n\nPolicy `{out['policy']}`"
            + (f" on teacher `{out['teacher']}`'s rollouts" if out.get("teacher") else "") + f", seeds {out['seeds']}, {out['seconds']:.0f} s. "
            f"Lake: `{lake}`. Plot: {plot}\n\n" + md_table(out["summary"])
            + md_commands([sql_command(lake, f"SELECT run_id, arm, accuracy, prompts FROM model_eval WHERE run_id IN ({runs})")]))
    publish_markdown(artifact_key("efficacy", prefix), text, f"efficacy {prefix}: accuracy per arm, paired intervals")


def pipeline_failure(cfg_json: dict, stage: str, error: BaseException) -> str:
    """Markdown `pipeline-failed-<run>`: the stage that failed (or timed out), the error, and
    the commands that resume the run (every stage is idempotent: a re-run of the same run id
    keeps what was committed and does only what is missing). Returns the text."""
    run_id, lake = cfg_json["run_id"], cfg_json["lake"]
    detail = (str(error).strip().splitlines() or [""])[0][:500]
    timed_out = "timeout" in type(error).__name__.lower() or "timed out" in detail.lower() or \
        "exceeded timeout" in detail.lower()
    what = "timed out" if timed_out else "failed"
    param = shlex.quote(json.dumps({"cfg": cfg_json}, separators=(",", ":")))
    cmds = [f"prefect deployment run pipeline/nightly --params {param}",
            f"tokenmill pipeline --lake {shlex.quote(lake)} --run {shlex.quote(run_id)}   # with the run's other options"]
    text = (f"# Pipeline `{run_id}` {what} at stage **{stage}**\n\n"
            f"Error ({type(error).__name__}): `{detail}`\n\n"
            f"Lake: `{lake}`. Finished stages are committed; resume the same run id and only what is missing runs:\n"
            + md_commands(cmds))
    if in_prefect_run():
        publish_markdown(artifact_key("pipeline-failed", run_id), text, f"pipeline {run_id} {what} at {stage}")
    return text


def report_summary(lake: str, run_id: str, written: dict[str, list[str]]) -> None:
    """Markdown `report-<run>`: a link to each plot (SVG and PNG) and the viewer command."""
    if not in_prefect_run():
        return
    from pathlib import Path

    lines = [f"# Plots of run `{run_id}`\n", f"Lake: `{lake}`\n"]
    for name, paths in written.items():
        links = " · ".join(f"[{Path(p).suffix[1:]}]({Path(p).resolve().as_uri()})" for p in paths)
        lines.append(f"- **{name}**: {links} (`{paths[0]}`)")
    if not written:
        lines.append("_no plot: the run has no rows to draw yet_")
    text = "\n".join(lines) + "\n" + md_commands([view_command(lake, run_id),
                                                   f"tokenmill report --lake {shlex.quote(lake)} --run {shlex.quote(run_id)}"])
    publish_markdown(artifact_key("report", run_id), text, f"run {run_id}: plots")
