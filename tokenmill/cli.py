"""The `tokenmill` command: demo, run, label, sql, view, report, serve, models …

Every user-facing failure is a `TokenmillError`: printed as one line saying what was
wrong and how to fix it, exit code 2, no traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tokenmill.config import DEFAULT_LAKE
from tokenmill.config import CriticalConfig, HallucinationConfig, LabelSettings, RewardsConfig, RoutingConfig
from tokenmill.config import (ARM_NAMES, DEFAULT_PRESET, PIPELINE_PRESETS, PipelineConfig, RolloutConfig, RunnerConfig,
                              ProbeConfig, RouterConfig, SamplingConfig, SourceConfig, TrainConfig)
from tokenmill.errors import TokenmillError
from tokenmill.flows.demo import DemoConfig
from tokenmill.studies.efficacy_config import EfficacyConfig
from tokenmill.pairs import parse_pairs  # noqa: F401  (the one KEY=VALUE parser; tokenmill.cli.parse_pairs stays)

app = typer.Typer(help="tokenmill: a token-level data mill for LLM post-training.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
models_app = typer.Typer(help="Build, list and evaluate models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
router_app = typer.Typer(help="Train and evaluate R2R routers (small model + large model on the tokens that matter).",
                         no_args_is_help=True)
app.add_typer(router_app, name="router")
probe_app = typer.Typer(help="Train and evaluate hallucination probes on labelled runs.", no_args_is_help=True)
app.add_typer(probe_app, name="probe")
ast_app = typer.Typer(help="Parse source code into the universal AST tables.", no_args_is_help=True)
app.add_typer(ast_app, name="ast")
study_app = typer.Typer(help="Studies over seeds: do token-level labels pay off?", no_args_is_help=True)
app.add_typer(study_app, name="study")
console = Console()
err = Console(stderr=True)

def _config_default(source, path: str):
    """(value, description) of the field at dotted `path` ("sampling.n", "arms.0.train.lr") of
    `source`: a config class (its field defaults) or a config (e.g. the default preset's pipeline)."""
    value, description = source, None
    for part in path.split("."):
        if isinstance(value, list):
            value, description = value[int(part)], None
            continue
        cls = value if isinstance(value, type) else type(value)
        field = cls.model_fields[part]
        description = field.description
        value = field.get_default(call_default_factory=True) if isinstance(value, type) else getattr(value, part)
    return value, description


def _shown(value) -> str | bool:
    if value is None or value == []:
        return False
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def config_option(source, path: str, *decls: str, help: Optional[str] = None, **kwargs):
    """An option whose default is None, "the config's own": the value a config model (or a
    preset's config) holds at `path` is shown as its default, and the field's description is its
    help unless `help` says more. The command passes on only the options given, so the config
    model stays the one place each default lives."""
    value, description = _config_default(source, path)
    if help is None and description:
        help = description[:1].upper() + description[1:] + "."
    return typer.Option(None, *decls, help=help, show_default=_shown(value), **kwargs)


def given(**options) -> dict:
    """The options the user gave (the rest are None: the config's defaults apply)."""
    return {k: v for k, v in options.items() if v is not None}


LakeOpt = typer.Option(DEFAULT_LAKE, "--lake", help="Lake location: a directory or a filesystem URI (s3://…).")
RunnerOpt = config_option(RunnerConfig, "kind", "--task-runner", help="threads (this machine) or ray (model tasks spread "
                          "over a Ray cluster; needs tokenmill[ray]).")
RayAddressOpt = config_option(RunnerConfig, "address", "--ray-address", help="ray: the cluster, host:port (from `ray "
                              "start --head`) or ray://host:10001; default: start a local Ray.")
GpusOpt = config_option(RunnerConfig, "gpus", "--gpus", help="ray: GPUs each model task (generate, score, train, "
                        "evaluate) requests.")


def runner_config(kind: Optional[str], address: Optional[str], gpus: Optional[float]):
    """The RunnerConfig of --task-runner, --ray-address, --gpus (None: RunnerConfig's default)."""
    if kind is not None and kind not in ("threads", "ray"):
        raise TokenmillError(f"unknown task runner {kind!r}", fix="use --task-runner threads or --task-runner ray")
    if (kind or RunnerConfig.model_fields["kind"].default) == "threads" and (address or gpus):
        raise TokenmillError("--ray-address and --gpus need --task-runner ray", fix="add --task-runner ray")
    return RunnerConfig(**given(kind=kind, address=address, gpus=gpus))


class _HideUserErrors(logging.Filter):
    """Drops Prefect's reports of a task or flow run that failed with a TokenmillError (the
    exception with its traceback, and the run's "Finished in state Failed(... EngineError: …)"):
    `main` prints that error as one line. Any other exception keeps its traceback (a bug).
    The run's state in the Prefect API still carries the message."""

    _FAILED = re.compile(r"Finished in state Failed\(.*exception:? (\w+):")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            return not isinstance(exc, TokenmillError)
        if record.levelno >= logging.ERROR and (m := self._FAILED.search(record.getMessage())):
            return m.group(1) not in _error_names(TokenmillError)
        return True


def _error_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_error_names(sub) for sub in cls.__subclasses__()))


_HIDE_USER_ERRORS = _HideUserErrors()


def _quiet_prefect(verbose: bool) -> None:
    # Set before prefect, vLLM and torch are imported: their settings are read once.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM warns a lot on CPU (tcmalloc, triton, …)
        os.environ.setdefault("TORCH_LOGS", "-all")  # torch's Python loggers: errors only
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # and its C++ warnings
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", module=r"vllm(\.|$)")
        for name in ("prefect.flow_runs", "prefect.task_runs"):  # kept by Prefect's logging set-up
            logging.getLogger(name).addFilter(_HIDE_USER_ERRORS)


def _run_rollouts(cfg) -> dict:
    from tokenmill import progress
    from tokenmill.flows.checked import run_rollouts

    return run_rollouts(cfg, bars=progress.rich_bars)


def _run_label(cfg) -> dict:
    from tokenmill import progress
    from tokenmill.flows.checked import run_label

    return run_label(cfg, bars=progress.rich_bars)


def _print_label_summary(lake: str, run_id: str, wall: float, labelers: list[str]) -> None:
    from tokenmill.report.summary import label_hints, label_summary, render_table
    from tokenmill.storage.lake import Lake

    console.print(render_table(label_summary(Lake(lake), run_id), title=f"labels of run {run_id} — {wall:.1f} s wall time"))
    if "critical" not in labelers or not Lake(lake).files("critical", run_id):  # only when this labelling made them
        return
    console.print("\nThe ten most critical tokens of incorrect arithmetic rollouts:")
    for hint in label_hints(lake, run_id):
        console.print(f"  {hint}", soft_wrap=True, highlight=False, markup=False)


def parse_roles(pairs: list[str]) -> dict:
    """["ref=tiny-small"] → {"ref": "tiny-small"}."""
    return parse_pairs(pairs, "--model", "ref=tiny-small", coerce=False)


def parse_options(pairs: list[str]) -> dict:
    """["max_model_len=4096", "dtype=bfloat16"] → {"max_model_len": 4096, "dtype": "bfloat16"}."""
    return parse_pairs(pairs, "--engine-option", "max_model_len=4096")


def _print_summary(lake: str, run_id: str, wall: float) -> None:
    from tokenmill.report.summary import explore_hints, pass_at_k_summary, render_table, run_summary
    from tokenmill.storage.lake import Lake

    console.print(render_table(run_summary(Lake(lake), run_id), title=f"run {run_id} — {wall:.1f} s wall time"))
    passk = pass_at_k_summary(Lake(lake), run_id)
    if passk.num_rows:
        console.print(render_table(passk, title="pass@k (unbiased estimator, Chen et al. 2021) per source × model"))
    console.print("\nExplore it:")
    for hint in explore_hints(lake, run_id):
        console.print(f"  {hint}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def demo(
    lake: str = LakeOpt,
    prompts: Optional[int] = config_option(DemoConfig, "prompts", help="Prompts per world."),
    samples: Optional[int] = config_option(DemoConfig, "samples", help="Samples per prompt."),
    engine: Optional[str] = config_option(DemoConfig, "engine", help="hf or vllm."),
    run_id: Optional[str] = config_option(DemoConfig, "run_id", "--run-id", help="Run id (re-running the same id adds nothing)."),
    no_label: bool = typer.Option(False, "--no-label", help="Only roll out; skip scoring, labelling, routing and training."),
    route_prompts: Optional[int] = config_option(DemoConfig, "route_prompts", help="Routing: greedy tiny-large "
                                                 "trajectories labelled to train the router (0 = skip)."),
    arm: Optional[str] = config_option(DemoConfig, "arm", help="The pipeline arm curated, trained and evaluated on the "
                                       "run: dpo, cdpo, tgdpo, sft, sft-critical, sft-reward."),
    train_steps: Optional[int] = config_option(DemoConfig, "train_steps", help="The arm's training steps."),
    eval_prompts: Optional[int] = config_option(DemoConfig, "eval_prompts", help="Held-out arithmetic prompts for the "
                                                "base model and the arm."),
    real_prompts: Optional[int] = config_option(DemoConfig, "real_prompts", help="Real model: smollm2-135m prompts per "
                                                "world (arithmetic, bios), labelled (0 = skip)."),
    verbose: bool = typer.Option(False, help="Show Prefect and engine logs."),
):
    """Every stage on the bundled models, into one lake (tokenmill/flows/demo.py): roll out
    both tiny models on three worlds, score and label them, train hallucination probes and a
    router, curate → train → evaluate one arm, plot; then a real instruct model (SmolLM2-135M)
    in its chat template, labelled."""
    _quiet_prefect(verbose)
    from tokenmill import progress
    from tokenmill.flows.demo import run_demo

    cfg = DemoConfig(**given(lake=lake, prompts=prompts, samples=samples, engine=engine, run_id=run_id,
                             route_prompts=route_prompts, arm=arm, train_steps=train_steps, eval_prompts=eval_prompts,
                             real_prompts=real_prompts), label=not no_label)
    console.print(f"[bold]tokenmill demo[/]: 2 models × 3 worlds × {cfg.prompts} prompts × {cfg.samples} samples → {cfg.lake}")
    run_demo(cfg, show=lambda stage, out: _show_demo(cfg, stage, out), bars=progress.rich_bars)
    if cfg.label:
        console.print("\nSee the tokens with their labels (hover one, or compare two rollouts of a prompt):")
        console.print(f"  tokenmill view --lake {cfg.lake} --run {cfg.run_id}", highlight=False, soft_wrap=True)


def _show_demo(cfg, stage: str, out: dict) -> None:
    """One demo stage's result as the tables a user reads."""
    from tokenmill.report.summary import label_summary, render_table, span_counts
    from tokenmill.storage.lake import Lake

    lake, run_id, wall = cfg.lake, out["run_id"], out["wall_s"]
    if "skipped" in out:
        console.print(out["skipped"], highlight=False, markup=False)
    elif stage == "rollouts":
        _print_summary(lake, run_id, wall)
    elif stage == "label":
        _print_label_summary(lake, run_id, wall, ["critical"])
        _print_ast_shares(lake, run_id)
        console.print(render_table(span_counts(Lake(lake), run_id), title="hallucination spans by label"))
    elif stage == "probes":
        _print_probes(lake, run_id, out["probes"], wall)
    elif stage == "routing":
        console.print(f"\n[bold]routing[/]: tiny-large greedy on {cfg.route_prompts} training prompts, labelled against "
                      f"tiny-small (run {run_id})")
        shares = label_summary(Lake(lake), run_id).select(["output", "rows", "rollouts", "mean"]).rename_columns(
            ["class", "tokens", "rollouts", "share"])
        console.print(render_table(shares, title="routing labels"))
        _print_router(out["router"], wall)
    elif stage == "arm":
        _print_arm_eval(out["eval"], out["arms"], out["world"], wall)
    elif stage == "report":
        _print_written(run_id, out["written"])
    elif stage == "real model":
        console.print(f"\n[bold]a real model[/]: smollm2-135m (SmolLM2-135M-Instruct) × 2 worlds × {out['prompts']} "
                      f"prompts × {out['samples']} samples, prompts in its chat template")
        _print_summary(lake, run_id, wall)
        from tokenmill.engines import load_tokenizer

        first = Lake(lake).read("rollouts", run_id, columns=["prompt_token_ids", "completion"]).slice(0, 1).to_pylist()[0]
        console.print("one stored prompt, as the model saw it (its token ids decoded), and its completion:")
        console.print(load_tokenizer("smollm2-135m").decode(first["prompt_token_ids"]) + first["completion"][:300],
                      highlight=False, markup=False, soft_wrap=True)
        if out.get("labelers"):
            _print_label_summary(lake, run_id, wall, [])


def _print_ast_shares(lake: str, run_id: str) -> None:
    from tokenmill.report.summary import ast_category_shares, ast_file_summary, render_table
    from tokenmill.storage.lake import Lake

    console.print(render_table(ast_file_summary(Lake(lake), run_id), title="code in rollouts, parsed (universal AST)"))
    console.print(render_table(ast_category_shares(Lake(lake), run_id), title="generated code tokens by AST category"))


def _print_arm_eval(evals: list[dict], arms: dict, world: str, wall: float) -> None:
    """Held-out accuracy of the base model and each trained arm (the pipeline's closing table)."""
    import pyarrow as pa

    from tokenmill.report.summary import render_table

    rows = [{"arm": e["arm"] or "base", "model": e["model"], "train rows": (arms.get(e["arm"]) or {}).get("dataset_rows"),
             "accuracy": round(e["accuracy"], 4), "prompts": e["prompts"]} for e in evals]
    console.print(render_table(pa.Table.from_pylist(rows),
                               title=f"held-out {world} accuracy (greedy) — {wall:.0f} s wall time"))


@app.command()
def label(
    run_id: str = typer.Option(..., "--run", help="The run whose rollouts to label."),
    lake: str = LakeOpt,
    labelers: str = typer.Option("rewards,critical", help="Comma-separated label families (`tokenmill/labelers`): "
                                 "rewards, critical, routing, hallucination, ast, tvm, …"),
    model: list[str] = typer.Option(["ref=tiny-small"], help="ROLE=MODEL for scoring, e.g. ref=tiny-small; repeatable. "
                                    "The role `policy` is each rollout's own model."),
    kinds: Optional[str] = config_option(RewardsConfig, "kinds", help="Reward kinds, comma-separated: dpo, grpo, tempo, "
                                         "d3s, entropy, rlpr, rlpr_raw."),
    beta: Optional[float] = config_option(RewardsConfig, "beta", help="dpo: β of the implicit reward."),
    clip: Optional[float] = config_option(RewardsConfig, "clip", help="dpo: clip rewards to ±clip."),
    keep_frac: Optional[float] = config_option(RewardsConfig, "keep_frac", help="d3s: share of a shard's tokens kept."),
    critical_beta: Optional[float] = config_option(CriticalConfig, "beta", help="critical: contrast strength β."),
    critical_top_k: Optional[int] = config_option(CriticalConfig, "top_k", help="critical: lowest-p_CE tokens per "
                                                  "rollout marked critical."),
    contrast_recipe: str = typer.Option("cdpo", help="critical: how the pos/neg models are trained: cdpo (the authors': "
                                        "LoRA r 8, lr 3e-4, 1 epoch, batch 6, bf16 saves) or tiny (full fine-tune, "
                                        "150 steps, for the bundled tiny models)."),
    train_steps: Optional[int] = typer.Option(None, help="critical: fine-tuning steps of the pos/neg models "
                                              "(default: the recipe's; cdpo: one epoch)."),
    train_epochs: Optional[int] = typer.Option(None, help="critical: passes over the training rollouts (without --train-steps)."),
    train_lr: Optional[float] = typer.Option(None, help="critical: peak learning rate of the pos/neg models."),
    train_batch: Optional[int] = typer.Option(None, help="critical: sequences per fine-tuning step."),
    logits_memory_mb: Optional[float] = config_option(CriticalConfig, "logits_memory_mb", help="critical: MiB of "
                                                      "\\[tokens, vocab] float32 arrays one p_CE pass may hold (sets the "
                                                      "tokens per LM-head call)."),
    routing_small: Optional[str] = config_option(RoutingConfig, "small", help="routing: the small model (every other "
                                                 "model's rollouts are labelled)."),
    routing_verifier: Optional[str] = config_option(RoutingConfig, "verifier", help="routing: outcome (exact-answer "
                                                    "worlds) or judge."),
    judge_model: Optional[str] = typer.Option(None, help="routing: the judge verifier's model (default: the large model)."),
    judge_template: Optional[Path] = typer.Option(None, help="routing: a judge prompt file with {context}, {reference}, "
                                                  "{candidate} (default: R2R's prompt)."),
    extractor: list[str] = typer.Option([], help="hallucination: span extractors (kb, numbers, dates, names, titles); "
                                        "repeatable; default: kb for bios and countries rollouts, the others elsewhere."),
    annotator: Optional[str] = config_option(HallucinationConfig, "annotator", help="hallucination: ground truth from "
                                             "the world's knowledge base (kb: bios, countries) or none."),
    verdicts_file: Optional[Path] = typer.Option(None, help="hallucination: JSONL span verdicts (rollout_id, span, label, index)."),
    code_language: Optional[str] = typer.Option(None, help="ast: language of code without a fence tag (default: python "
                                                "for the code world); file sources' unfenced completions are then "
                                                "parsed whole."),
    score_role: list[str] = typer.Option([], help="Also score under this role (e.g. large); repeatable."),
    hidden_layer: Optional[int] = typer.Option(None, help="Store this layer's hidden states (float16) for --score-role roles."),
    setting: list[str] = typer.Option([], "--set", help="FAMILY.KEY=VALUE: any label family's setting, e.g. "
                                      "tvm.target=reward; repeatable; applied over the options above."),
    engine: Optional[str] = config_option(LabelSettings, "engine", help="Engine of every model a labeler loads: hf or "
                                          "vllm (a labeler that needs what the engine cannot give, e.g. critical's full "
                                          "logits, uses hf)."),
    engine_option: list[str] = typer.Option([], help="KEY=VALUE passed to the engine; repeatable."),
    task_runner: str = RunnerOpt,
    ray_address: Optional[str] = RayAddressOpt,
    gpus: float = GpusOpt,
    verbose: bool = typer.Option(False, help="Show Prefect and engine logs."),
):
    """Score what is missing, then label a run's rollouts (token_rewards, critical, routing,
    hallucination_spans, ast_*, scores)."""
    _quiet_prefect(verbose)
    from tokenmill.config import AstConfig, ContrastTrainConfig, LabelConfig

    # only the options given: each family's config model holds its defaults
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()] if kinds is not None else None
    cfg = LabelConfig(
        lake=lake, run_id=run_id, labelers=[x.strip() for x in labelers.split(",") if x.strip()],
        models=parse_roles(model), engine_options=parse_options(engine_option),
        score_roles=score_role, hidden_layer=hidden_layer, **given(engine=engine),
        rewards=RewardsConfig(**given(kinds=kind_list, beta=beta, clip=clip, keep_frac=keep_frac)),
        critical=CriticalConfig(**given(beta=critical_beta, top_k=critical_top_k, logits_memory_mb=logits_memory_mb),
                                train=ContrastTrainConfig.named(contrast_recipe, **given(
                                    steps=train_steps, epochs=train_epochs, lr=train_lr, batch=train_batch))),
        routing=RoutingConfig(**given(small=routing_small, verifier=routing_verifier, judge_model=judge_model,
                                      judge_template=judge_template.read_text() if judge_template else None)),
        hallucination=HallucinationConfig(**given(extractors=extractor or None, annotator=annotator,
                                                  verdicts_file=str(verdicts_file) if verdicts_file else None)),
        ast=AstConfig(**given(language=code_language)), runner=runner_config(task_runner, ray_address, gpus),
    )
    if setting:
        cfg = family_settings(cfg, parse_pairs(setting, "--set", "tvm.target=reward"))
    t0 = time.time()
    _run_label(cfg)
    _print_label_summary(lake, run_id, time.time() - t0, cfg.labelers)


def family_settings(cfg, pairs: dict):
    """The label config with FAMILY.KEY=VALUE settings applied (validated by the family's
    own config model)."""
    from tokenmill.errors import TokenmillError
    from tokenmill.labelers import families

    data = cfg.model_dump()
    for key, value in pairs.items():
        fam, _, field = key.partition(".")
        if fam not in families() or not field:
            raise TokenmillError(f"--set {key}: not FAMILY.KEY of a label family",
                                 fix=f"families: {', '.join(families())}; e.g. --set tvm.target=reward")
        known = families()[fam].config.model_fields
        if field not in known:
            raise TokenmillError(f"--set {key}: {fam} has no setting {field!r}", fix=f"{fam} settings: {', '.join(known)}")
        data[fam][field] = value
    return type(cfg).model_validate(data)


def file_sources(paths: list[str], limit: int | None, **options: list[str]) -> list:
    """One `SourceConfig` per --source. Each option value is ``SOURCE:VALUE`` (SOURCE a given
    source's file stem or spec: that source only) or ``VALUE`` (every source: a prefix that
    names no source is part of the value); a later value for a source wins, meta fields add up."""
    from tokenmill.config import SourceConfig

    names = [_source_name(p) for p in paths]
    given: list[dict] = [{} for _ in paths]
    for option, values in options.items():
        for value in values:
            head, sep, rest = value.partition(":")
            targets = [i for i, (p, n) in enumerate(zip(paths, names)) if sep and head in (p, n)]
            for i in targets or range(len(paths)):
                v = rest if targets else value
                if option == "meta_field":
                    given[i].setdefault("meta_fields", []).append(v)
                else:
                    given[i][option] = v
    return [SourceConfig(path=p, limit=limit, **g) for p, g in zip(paths, given)]


def _source_name(spec: str) -> str:
    """The name a --source gets in the lake (a file's stem; a world's name), read without
    opening anything."""
    from tokenmill.sources.files import open_source

    try:
        return open_source(spec).name
    except (ValueError, TokenmillError):  # a world by name, or a path that load() will name in its error
        return spec


def _chat_template(mode: str) -> str:
    from tokenmill.models.chat import CHAT_TEMPLATE_MODES

    if mode not in CHAT_TEMPLATE_MODES:
        raise TokenmillError(f"--chat-template {mode!r} is not a mode", fix=f"use one of: {', '.join(CHAT_TEMPLATE_MODES)}")
    return mode


@app.command()
def run(
    lake: str = LakeOpt,
    run_id: Optional[str] = typer.Option(None, help="Run id; default: a new timestamped id."),
    world: list[str] = typer.Option([], help="A built-in world (arithmetic, code, bios); repeatable."),
    source: list[str] = typer.Option([], help="A prompt file (.jsonl, .parquet, a saved HF dataset dir) or a packaged "
                                     "benchmark (humaneval) or world by name; repeatable."),
    prompts: Optional[int] = config_option(SourceConfig, "n", help="Prompts per world."),
    split: Optional[str] = config_option(SourceConfig, "split", help="World split: train, test or all."),
    prompt_field: list[str] = typer.Option([], help="[SOURCE:]FIELD holding the prompt in --source files (default: prompt)."),
    reference_field: list[str] = typer.Option([], help="[SOURCE:]FIELD holding the reference answer; SOURCE: (a file "
                                              "stem) maps one source only, so files with and without answers mix."),
    split_field: list[str] = typer.Option([], help="[SOURCE:]FIELD holding each record's split (train/test)."),
    meta_field: list[str] = typer.Option([], help="[SOURCE:][KEY=]FIELD copied into prompt meta for the verifier, e.g. "
                                         "tests=test_list; repeatable."),
    verifier: list[str] = typer.Option([], help="[SOURCE:]NAME: text, math, regex, code-tests or reference-match "
                                       "(default: reference-match where there is a reference)."),
    limit: Optional[int] = typer.Option(None, help="Read at most this many records per file (problems of a benchmark)."),
    model: Optional[list[str]] = config_option(RolloutConfig, "models", "--model",
                                               help="Bundled name, local path or hub id; repeatable."),
    engine: Optional[str] = config_option(RolloutConfig, "engine", help="hf (transformers) or vllm."),
    engine_option: list[str] = typer.Option(
        [], help="KEY=VALUE passed to the engine (value parsed as JSON if it can be), e.g. max_model_len=4096; repeatable."),
    samples: Optional[int] = config_option(SamplingConfig, "n", "--samples", "-n", help="Samples per prompt."),
    temperature: Optional[float] = config_option(SamplingConfig, "temperature", help="0 = greedy."),
    top_p: Optional[float] = config_option(SamplingConfig, "top_p"),
    max_tokens: Optional[int] = config_option(SamplingConfig, "max_tokens"),
    seed: Optional[int] = config_option(SamplingConfig, "seed", help="Sampling seed, also of the worlds' prompt draws."),
    logprobs: Optional[int] = config_option(SamplingConfig, "logprobs", help="Top-k alternatives stored per token."),
    stop: Optional[list[str]] = config_option(SamplingConfig, "stop", help="A completion also ends after the token "
                                              "completing this string; repeatable."),
    stop_id: Optional[list[int]] = config_option(SamplingConfig, "stop_token_ids", "--stop-id", help="A completion also "
                                                 "ends at this token id (besides every EOS id); repeatable."),
    chat_template: Optional[str] = config_option(RolloutConfig, "chat_template", help="auto: each model's chat template "
                                                 "where it has one; none: raw text."),
    system_prompt: Optional[str] = config_option(RolloutConfig, "system_prompt", help="System message (default: the chat "
                                                 "template's own)."),
    shard_size: Optional[int] = config_option(RolloutConfig, "shard_size", help="Prompts per generation task."),
    task_runner: str = RunnerOpt,
    ray_address: Optional[str] = RayAddressOpt,
    gpus: float = GpusOpt,
    verbose: bool = typer.Option(False, help="Show Prefect and engine logs."),
):
    """Run the rollouts flow: sources → generate → verify → lake."""
    _quiet_prefect(verbose)
    sources = [SourceConfig(world=w, **given(n=prompts, split=split, seed=seed)) for w in world]
    sources += file_sources(source, limit, prompt_field=prompt_field, reference_field=reference_field,
                            split_field=split_field, meta_field=meta_field, verifier=verifier)
    if not sources:
        raise TokenmillError("no prompt source given", fix="add --world arithmetic or --source prompts.jsonl")
    sampling = SamplingConfig(**given(n=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                                      logprobs=logprobs, stop=stop, stop_token_ids=stop_id))
    cfg = RolloutConfig(
        lake=lake, sources=sources, sampling=sampling, engine_options=parse_options(engine_option),
        runner=runner_config(task_runner, ray_address, gpus),
        **given(run_id=run_id or None, models=model, engine=engine, shard_size=shard_size, system_prompt=system_prompt,
                chat_template=None if chat_template is None else _chat_template(chat_template)),
    )
    t0 = time.time()
    _run_rollouts(cfg)
    _print_summary(lake, cfg.run_id, time.time() - t0)


@app.command()
def sql(
    query: str = typer.Argument(..., help="One read-only SELECT over the views prompts, rollouts, tokens …"),
    lake: str = LakeOpt,
    format: str = typer.Option("table", "--format", "-f", help="table, csv, json (JSON lines) or parquet."),
    out: Optional[Path] = typer.Option(None, help="Write the result to this file (required for parquet)."),
    max_rows: int = typer.Option(100, help="Rows shown by --format table."),
):
    """Query the lake with DuckDB, read-only."""
    from tokenmill.storage.catalog import check_out_path, format_result, run_query
    from tokenmill.storage.lake import Lake

    lk = Lake(lake).require()
    target = check_out_path(out, lk) if out else None  # before the query: a bad target costs nothing
    result = run_query(lk, query)
    text = format_result(result, format, target, max_rows=max_rows if format == "table" else None)
    if text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address the server binds (keep loopback unless you mean it)."),
    port: int = typer.Option(4200, help="Server port: the UI is http://HOST:PORT."),
    pool: str = typer.Option("tokenmill", help="Process work pool the deployments use."),
    deployments: Optional[Path] = typer.Option(None, help="A prefect.yaml (default: deployments/prefect.yaml)."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Start server and worker only."),
    model_slots: int = typer.Option(1, help="Tasks that load a model running at once across all flow runs "
                                    "(a Prefect tag concurrency limit on `model`; 0 = no limit)."),
    home: Optional[Path] = typer.Option(None, help="PREFECT_HOME for the server's database and logs (default: "
                                        "$PREFECT_HOME or ~/.prefect)."),
):
    """Start a local Prefect server, the work pool, tokenmill's deployments and a worker, on
    loopback; Ctrl-C stops them all. Then: `prefect deployment run pipeline/nightly`."""
    from tokenmill import serve as srv

    stack = srv.start(host=host, port=port, pool=pool, home=home, prefect_file=deployments, deploy=not no_deploy,
                      model_slots=model_slots, say=lambda m: console.print(m, highlight=False))
    try:
        pids = ", ".join(f"{s.name} {s.pid}" for s in stack.services)
        console.print(f"[bold]ready[/]: UI http://{host}:{port} — pids {pids}", highlight=False)
        console.print(f"  PREFECT_API_URL={stack.api_url} prefect deployment run pipeline/nightly", highlight=False,
                      soft_wrap=True)
        code = srv.wait(stack)
    finally:
        console.print("stopping worker and server…")
        stack.stop()
    raise typer.Exit(code)


@app.command()
def view(
    lake: str = LakeOpt,
    run_id: Optional[str] = typer.Option(None, "--run", help="Run shown first (the page lists every run)."),
    host: str = typer.Option("127.0.0.1", help="Loopback address to bind (127.0.0.1 or ::1)."),
    port: int = typer.Option(8765, help="Port (0 = any free one)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one self-contained HTML file instead of serving."),
    where: Optional[str] = typer.Option(None, help="--out: keep rollouts matching this SQL WHERE over rollouts."),
    limit: int = typer.Option(200, help="--out: rollouts per run put in the file."),
    query_timeout: float = typer.Option(10.0, "--query-timeout", min=0.01,
                                        help="Seconds a query may run before it is stopped."),
    memory_mb: int = typer.Option(1024, "--memory-mb", min=64, help="DuckDB's memory limit for the viewer's queries."),
    verbose: bool = typer.Option(False, help="Log every request."),
):
    """See tokens coloured by their labels: a local web page over the lake (or an HTML file
    with --out). Pick a run and a rollout, colour by any label, hover a token for all of
    them, or compare two rollouts of one prompt at their branching point.

    The server binds loopback only and answers only its own URL (Host header) with the
    random token it prints (set $TOKENMILL_VIEW_TOKEN to choose it): other pages in your
    browser cannot read or drive it."""
    from tokenmill.report.viewer import ViewerServer, write_html
    from tokenmill.storage.lake import Lake

    if out:
        path = write_html(Lake(lake).require(), out, [run_id] if run_id else None, where, limit)
        console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser", highlight=False)
        return
    server = ViewerServer(Lake(lake).require(), host, port, run_id, verbose, token=os.environ.get("TOKENMILL_VIEW_TOKEN") or None,
                          query_timeout_s=query_timeout, memory_mb=memory_mb)
    console.print(f"[bold]tokenmill view[/]: {server.url}{'&run=' + run_id if run_id else ''} — Ctrl-C to stop",
                  highlight=False, soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def report(
    lake: str = LakeOpt,
    run_id: str = typer.Option(..., "--run", help="The run to plot."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the files (default: <lake>/_reports/<run>/)."),
):
    """Draw a run's plots as PNG and SVG: accuracy per world × model, label distributions,
    routing accuracy against large-model share, probe ROC curves (each where the run has data)."""
    _print_report(lake, run_id, out)


def _print_report(lake: str, run_id: str, out: Optional[Path] = None) -> None:
    from tokenmill.report.plots import write_report
    from tokenmill.storage.lake import Lake

    lk = Lake(lake)
    if run_id not in lk.runs("rollouts"):
        raise TokenmillError(f"run {run_id!r} has no rollouts in {lake}",
                             fix=f"runs: {', '.join(lk.runs('rollouts')) or 'none yet'}")
    _print_written(run_id, write_report(lk, run_id, out))


def _print_written(run_id: str, written: dict) -> None:
    from rich.table import Table

    table = Table("plot", "files", title=f"plots of run {run_id}", title_justify="left")
    for name, paths in written.items():
        table.add_row(name, "\n".join(str(p) for p in paths))
    console.print(table if written else f"run {run_id}: nothing to plot yet")


@app.command()
def check(lake: str = LakeOpt,
          deep: bool = typer.Option(False, "--deep", help="Read every page of every table file, not only footers "
                                                           "(finds corrupt data; reads the whole lake).")):
    """Check every lake file: unreadable or corrupt files, newer schema versions, stray temp
    files, artifacts left without their DONE marker by a crashed training."""
    from rich.table import Table

    from tokenmill.storage.lake import Lake

    lk = Lake(lake)
    problems = lk.check(deep=deep)
    counts = {t: len(lk.files(t)) for t in lk.tables()}
    console.print(f"{lake}: " + (", ".join(f"{t} {n} files" for t, n in counts.items()) or "no data"))
    if not problems:
        console.print("no problems found")
        return
    table = Table("kind", "path", "detail", title=f"{len(problems)} problems")
    for p in problems:
        table.add_row(p.kind, p.path, p.detail)
    console.print(table)
    raise typer.Exit(1)


@models_app.command("list")
def models_list():
    """The models known by name (bundled tiny ones, packaged real ones) and where they live."""
    from rich.table import Table

    from tokenmill.models.packaged import PACKAGED, describe
    from tokenmill.models.registry import BUNDLED, resolve_model

    table = Table("name", "kind", "what", "where")
    for name in BUNDLED:
        try:
            where = resolve_model(name).path
        except TokenmillError as e:
            where = str(e)
        table.add_row(name, "bundled", "tiny Llama trained on the worlds", where)
    for name, spec in PACKAGED.items():
        table.add_row(name, "packaged", spec.about, describe(name))
    console.print(table)


@models_app.command("build")
def models_build(
    out: Optional[Path] = typer.Option(None, help="Output directory; default: the bundled model directory."),
    scale: float = typer.Option(1.0, help="Fraction of the training corpus (smaller = faster)."),
    steps: Optional[int] = typer.Option(None, help="Training steps for every model (default: each model's own)."),
    name: list[str] = typer.Option([], help="Build only these models."),
):
    """Train the bundled tokenizer and tiny models from the worlds' train splits."""
    from rich.progress import Progress

    from tokenmill.models.builder import SPECS, build
    from tokenmill.models.registry import TINY_DIR

    names = tuple(name) or tuple(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise TokenmillError(f"unknown model {unknown[0]!r}", fix=f"choose from {', '.join(SPECS)}")
    with Progress() as prog:
        bars = {}

        def factory(n):
            def update(step, total, loss):
                bars.setdefault(n, prog.add_task(f"train {n}", total=total))
                prog.update(bars[n], completed=step, description=f"train {n} loss {loss:.3f}")
            return update

        info = build(out or TINY_DIR, names=names, scale=scale, steps=steps, progress_factory=factory)
    for n, meta in info.items():
        console.print(f"{n}: {meta['params']:,} params, final loss {meta['final_loss']:.4f}, {meta['train_seconds']} s")


@models_app.command("eval")
def models_eval(
    model: list[str] = typer.Option(["tiny-small", "tiny-large"], help="Models to evaluate."),
    prompts: int = typer.Option(100, help="Held-out prompts per world."),
    engine: str = typer.Option("hf"),
):
    """Greedy accuracy of models on held-out prompts of every world."""
    from tokenmill.studies.model_table import evaluate
    from tokenmill.report.summary import render_table

    console.print(render_table(evaluate(model, prompts, engine), title="greedy accuracy (temperature 0)"))


@app.command()
def curate(
    recipe: str = typer.Option(..., help="cdpo-pairs, dpo-pairs, weighted-sft, router-set, probe-set, or sql:PATH."),
    run_id: list[str] = typer.Option(..., "--run", help="Source run(s); repeatable."),
    lake: str = LakeOpt,
    param: list[str] = typer.Option([], help="KEY=VALUE recipe parameter, e.g. weight='coalesce(critical_weight, 1)'; "
                                    "repeatable."),
    verbose: bool = typer.Option(False, help="Show Prefect logs."),
):
    """Select and weight tokens from labelled runs into a dataset (Parquet shards + manifest
    under the lake's _datasets/), ready for the training tasks, 🤗 datasets or TRL. Runs the
    `curate` flow (a Prefect run, with the dataset's summary as its artifact)."""
    from tokenmill.config import CurateConfig

    params = parse_pairs(param, "--param", "max_pairs=2", text_keys=("config",))
    cfg = CurateConfig(lake=lake, runs=list(run_id), recipe=recipe, params=params)
    from tokenmill.curation.curate import get_recipe

    get_recipe(recipe).params(params)  # bad input fails before Prefect starts
    _quiet_prefect(verbose)
    from tokenmill.flows.curate import curate_flow

    m = curate_flow(cfg)
    console.print(f"dataset [bold]{m['dataset_id']}[/] ({m['kind']}, recipe {m['recipe']}): {m['rows']:,} rows, "
                  f"{m['tokens']:,} tokens — {m['seconds']:.1f} s")
    console.print(f"  {lake}/{m['path']}  (manifest.json, {len(m['shards'])} shard(s))", highlight=False)


@app.command()
def train(
    dataset: str = typer.Option(..., help="A dataset id from `tokenmill curate`."),
    model: Optional[str] = config_option(TrainConfig, "model", help="Base model: bundled name, local path or hub id."),
    objective: Optional[str] = config_option(TrainConfig, "objective", help="sft (sequences), dpo or tdpo (pairs; "
                                             "tdpo: TDPO, DPO with a token-level KL term; its reference stays "
                                             "loaded beside the policy)."),
    weighting: Optional[str] = config_option(TrainConfig, "weighting", help="dataset (the curated token weights, e.g. "
                                             "cDPO's), plain (ignore them: plain SFT / DPO) or tgdpo (dpo: TGDPO's "
                                             "weights from the pairs' token rewards); tdpo: plain only, its default."),
    alpha: Optional[float] = config_option(TrainConfig, "alpha", help="tgdpo: α in β_t = β·(1 ± α·β·r̂_t)."),
    tdpo_alpha: Optional[float] = config_option(TrainConfig, "tdpo_alpha", help="tdpo2: α, the weight of the "
                                                "sequential-KL difference."),
    tdpo_variant: Optional[str] = config_option(TrainConfig, "tdpo_variant", help="tdpo1 (the KL difference as is) or "
                                                "tdpo2 (α times it, no gradient through the chosen side's KL)."),
    lake: str = LakeOpt,
    steps: Optional[int] = config_option(TrainConfig, "steps", help="Optimizer steps."),
    lr: Optional[float] = config_option(TrainConfig, "lr", help="Learning rate (AdamW)."),
    schedule: Optional[str] = config_option(TrainConfig, "schedule", help="Learning rate over the steps: constant, "
                                            "or linear (decay to 0, TRL's default)."),
    warmup: Optional[float] = config_option(TrainConfig, "warmup", help="Share of the steps with the learning rate "
                                            "rising from 0 first (HF's warmup_ratio; cDPO's authors 0.1)."),
    weight_decay: Optional[float] = config_option(TrainConfig, "weight_decay", help="AdamW weight decay on all but "
                                                  "biases and norms (HF Trainer's rule; cDPO's authors 0.01)."),
    batch: Optional[int] = config_option(TrainConfig, "batch", help="Sequences (or pairs) per micro-batch."),
    grad_accum: Optional[int] = config_option(TrainConfig, "grad_accum", help="Gradient accumulation steps."),
    beta: Optional[float] = config_option(TrainConfig, "beta", help="dpo, tdpo: β."),
    rpo_alpha: Optional[float] = config_option(TrainConfig, "rpo_alpha", help="dpo, tdpo: α of RPO's NLL term on the "
                                               "chosen tokens (Pang et al. 2024; 0: off)."),
    seed: Optional[int] = config_option(TrainConfig, "seed", help="Seed of the batch draws and the weights' noise."),
    keep_start: Optional[float] = config_option(TrainConfig, "keep_start", help="sft: D³S's dynamic keep schedule — "
                                                "train only each batch's top share of tokens by weight (weights 0/1), "
                                                "this share at the first step (e.g. 0.2 on d3s-weighted data)."),
    keep_end: Optional[float] = config_option(TrainConfig, "keep_end", help="sft: the kept share at the last step."),
    verbose: bool = typer.Option(False, help="Show Prefect logs."),
):
    """Token-weighted SFT, DPO (plain, cDPO-weighted or TGDPO) or TDPO of a model on a curated
    dataset; the model is stored in the lake with lineage, its metrics in `train_metrics`.
    Runs the `train` flow (a Prefect run, with the model's summary as its artifact)."""
    from tokenmill.tasks.train.weighted import check_settings
    from tokenmill.tasks.train.weighted_config import default_weighting

    defaults = TrainConfig.model_fields
    # bad input fails before Prefect starts, in the trainer's own words (tdpo's default weighting: plain)
    chosen = default_weighting({"objective": objective or defaults["objective"].default, "weighting": weighting})
    check_settings(chosen["objective"], chosen["weighting"] or defaults["weighting"].default)
    cfg = TrainConfig(lake=lake, dataset_id=dataset, **given(model=model, objective=objective, weighting=weighting,
                                                            alpha=alpha, tdpo_alpha=tdpo_alpha, tdpo_variant=tdpo_variant,
                                                            steps=steps, lr=lr, schedule=schedule, warmup=warmup,
                                                            weight_decay=weight_decay, batch=batch,
                                                            grad_accum=grad_accum,
                                                            beta=beta, rpo_alpha=rpo_alpha, seed=seed, keep_start=keep_start,
                                                            keep_end=keep_end))
    _quiet_prefect(verbose)
    from tokenmill.flows.train import train_flow

    with console.status(f"training {cfg.model} ({cfg.objective}) on {dataset}…"):
        out = train_flow(cfg)
    what = "reused" if out["reused"] else f"final loss {out['final_loss']:.4f}, {out['tokens']:,} loss tokens, {out['seconds']} s"
    console.print(f"model [bold]{out['artifact_id']}[/] ({what}): {out['local_path']}", highlight=False)


# the default preset's pipeline: what an option of `pipeline` left out means (shown as its default)
_PIPELINE = PipelineConfig()
_ARM_TRAIN_OPTIONS = ("steps", "lr", "batch")


def pipeline_config(preset: Optional[str] = None, *, arm: Optional[list[str]] = None, samples: Optional[int] = None,
                    eval_prompts: Optional[int] = None, task_runner: Optional[str] = None,
                    ray_address: Optional[str] = None, gpus: Optional[float] = None, **options) -> PipelineConfig:
    """The PipelineConfig `tokenmill pipeline` runs: preset `preset`'s (default: DEFAULT_PRESET),
    with each option given on top — the same config a deployment's `cfg: {preset: NAME}` gives.
    `options`: lake, run_id, model, world, prompts, engine, and steps / lr / batch of every arm;
    None everywhere means "the preset's value"."""
    options = given(**options)
    fields = {k: v for k, v in options.items() if k not in _ARM_TRAIN_OPTIONS}
    fields.update(given(preset=preset, arms=list(arm) if arm else None))
    if samples is not None:
        fields["sampling"] = {"n": samples}
    if eval_prompts is not None:
        fields["eval"] = {"prompts": eval_prompts}
    every = {k: options[k] for k in _ARM_TRAIN_OPTIONS if k in options}
    if every:  # every arm's: also over what the preset sets for one objective's arms
        own = PIPELINE_PRESETS.get(preset or DEFAULT_PRESET, {}).get("arm_train", {})
        fields["arm_train"] = {**every, **{o: {k: v for k, v in every.items() if k in own[o]}
                                           for o in ("dpo", "sft") if isinstance(own.get(o), dict)}}
    return PipelineConfig.model_validate({**fields, "runner": runner_config(task_runner, ray_address, gpus)})


@app.command()
def pipeline(
    preset: Optional[str] = config_option(PipelineConfig, "preset", help="Named settings, the same as a deployment's "
                                          f"`preset: NAME`: {', '.join(PIPELINE_PRESETS)} (tokenmill/config.py "
                                          "PIPELINE_PRESETS); the options below override its values."),
    lake: str = LakeOpt,
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id (default: a new one); re-running it adds only what is missing."),
    model: Optional[str] = config_option(_PIPELINE, "model", help="The policy: it rolls out, and every arm starts from it."),
    world: Optional[str] = config_option(_PIPELINE, "world", help="World: train split for rollouts, test split for evaluation."),
    prompts: Optional[int] = config_option(_PIPELINE, "prompts", help="Training prompts."),
    samples: Optional[int] = config_option(_PIPELINE, "sampling.n", help="Samples per prompt."),
    arm: Optional[list[str]] = config_option(_PIPELINE, "arms", help="Arms to train and compare; repeatable: "
                                             + ", ".join(ARM_NAMES) + "."),
    steps: Optional[int] = config_option(_PIPELINE, "arms.0.train.steps", help="Training steps of every arm."),
    lr: Optional[float] = config_option(_PIPELINE, "arms.0.train.lr", help="Learning rate of every arm."),
    batch: Optional[int] = config_option(_PIPELINE, "arms.0.train.batch", help="Batch size of every arm."),
    eval_prompts: Optional[int] = config_option(_PIPELINE, "eval.prompts", help="Held-out prompts for the evaluation."),
    engine: Optional[str] = config_option(_PIPELINE, "engine", help="hf or vllm."),
    task_runner: Optional[str] = RunnerOpt,
    ray_address: Optional[str] = RayAddressOpt,
    gpus: Optional[float] = GpusOpt,
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as JSON and exit "
                                      "(nothing runs)."),
    verbose: bool = typer.Option(False, help="Show Prefect and engine logs."),
):
    """rollouts → score → label → curate → train → evaluate, as one Prefect flow of
    subflows; prints held-out accuracy of the base model and of every arm. Defaults: the
    preset's (tiny unless --preset says otherwise)."""
    _quiet_prefect(verbose)
    from tokenmill.flows.pipeline import check_pipeline

    cfg = pipeline_config(preset, lake=lake, run_id=run_id or None, model=model, world=world, prompts=prompts,
                          samples=samples, arm=arm, steps=steps, lr=lr, batch=batch, eval_prompts=eval_prompts,
                          engine=engine, task_runner=task_runner, ray_address=ray_address, gpus=gpus)
    check_pipeline(cfg)  # bad input fails before Prefect starts
    if print_config:
        sys.stdout.write(cfg.model_dump_json(indent=2) + "\n")
        return
    from tokenmill.flows.pipeline import pipeline_flow
    from tokenmill import progress

    console.print(f"[bold]tokenmill pipeline[/] {cfg.run_id}: {cfg.model} on {cfg.world}, arms "
                  f"{', '.join(a.name for a in cfg.arms)}")
    with progress.rich_bars():
        out = pipeline_flow(cfg)
    _print_arm_eval(out["eval"], out["arms"], cfg.world, out["seconds"])


@study_app.command("efficacy")
def study_efficacy(
    lake: Optional[str] = config_option(EfficacyConfig, "lake", "--lake", help="Lake for the study's runs."),
    prefix: Optional[str] = config_option(EfficacyConfig, "run_prefix", "--prefix", help="Seed s writes run <prefix>-s<s>."),
    policy: Optional[str] = config_option(EfficacyConfig, "policy"),
    teacher: Optional[str] = config_option(EfficacyConfig, "teacher", help="Distillation: this model rolls out instead "
                                           "of the policy (same tokenizer); `none` for the policy's own rollouts."),
    seeds: Optional[int] = typer.Option(None, help="Seeds 0 … N−1 (each: its own rollouts, labels and training; "
                                                   "default 5)."),
    prompts: Optional[int] = config_option(EfficacyConfig, "prompts"),
    samples: Optional[int] = config_option(EfficacyConfig, "samples"),
    eval_prompts: Optional[int] = config_option(EfficacyConfig, "eval_prompts"),
    arms: list[str] = typer.Option(None, "--arm", help="Arms by name, repeatable: "
                                                       f"{', '.join(ARM_NAMES)} (default: {' '.join(EfficacyConfig().arms)})."),
    sft_lr: Optional[float] = typer.Option(None, help=f"Learning rate of the SFT-side arms (default {EfficacyConfig().sft['lr']:g})."),
    sft_steps: Optional[int] = typer.Option(None, help=f"Steps of the SFT-side arms (default {EfficacyConfig().sft['steps']})."),
    dpo_lr: Optional[float] = typer.Option(None, help=f"Learning rate of the DPO-side arms (default {EfficacyConfig().dpo['lr']:g})."),
    dpo_steps: Optional[int] = typer.Option(None, help=f"Steps of the DPO-side arms (default {EfficacyConfig().dpo['steps']})."),
    parallel: Optional[int] = config_option(EfficacyConfig, "parallel", help="Seeds run at once, each in a process of "
                                            "its own with cores / N torch threads (1: in turn)."),
    verbose: bool = typer.Option(False, help="Show Prefect and engine logs."),
):
    """Token-level vs sequence-level arms on the arithmetic world, over seeds: held-out accuracy
    per arm, paired differences with 95 % intervals, a plot (docs/BENCHMARKS.md's efficacy study)."""
    _quiet_prefect(verbose)
    from tokenmill import progress
    from tokenmill.flows.pipeline import check_pipeline
    from tokenmill.studies.efficacy_flow import efficacy_flow
    from tokenmill.report.summary import render_table
    from tokenmill.studies.efficacy import configs_for, efficacy_table

    base = EfficacyConfig()
    sft = {**base.sft, **given(lr=sft_lr, steps=sft_steps)}
    dpo = {**base.dpo, **given(lr=dpo_lr, steps=dpo_steps)}
    cfg = EfficacyConfig(**given(lake=lake, run_prefix=prefix, policy=policy, prompts=prompts, samples=samples,
                                 eval_prompts=eval_prompts, arms=arms or None, parallel=parallel,
                                 seeds=list(range(seeds)) if seeds is not None else None),
                         **({"teacher": None if teacher.lower() == "none" else teacher} if teacher else {}),
                         sft=sft, dpo=dpo)
    for c in configs_for(cfg):
        check_pipeline(c)  # bad input fails before Prefect starts
    with progress.rich_bars():
        out = efficacy_flow(cfg)
    import pyarrow as pa

    console.print(render_table(pa.Table.from_pylist(out["results"]), title="held-out accuracy per seed"))
    console.print(render_table(efficacy_table(out["summary"]), title=f"efficacy over {len(cfg.seeds)} seeds, 95 % t "
                                                                      f"intervals — {out['seconds']:.0f} s"))
    if out["plot"]:
        console.print(f"plot: {out['plot'][0]}")


@study_app.command("oracle")
def study_oracle(
    run_id: str = typer.Option(..., "--run", help="A run labelled with `process` and the labels to score "
                                                  "(rewards, critical)."),
    lake: str = LakeOpt,
    k: list[int] = typer.Option([1, 3], "--k", help="hit@k for these k; repeatable."),
    configs: Optional[str] = typer.Option(None, help="Config ids to read where a label scope has several "
                                                     "(comma-separated)."),
):
    """How well each token label (p_CE, entropy, surprise, D³S, TEMPO, GRPO, random) finds
    each rollout's first wrong token, scored against the `process` oracle: hit@k and AUC."""
    from tokenmill.report.summary import render_table
    from tokenmill.storage.lake import Lake
    from tokenmill.studies.oracle import oracle_scores

    console.print(render_table(oracle_scores(Lake(lake), run_id, tuple(k), configs),
                               title=f"first wrong token vs the process oracle — run {run_id}"))


@router_app.command("train")
def router_train(
    run_id: str = typer.Option(..., "--run", help="A run labelled with `tokenmill label --labelers routing`."),
    lake: str = LakeOpt,
    config_id: Optional[str] = typer.Option(None, "--config", help="Routing labels of this config id (default: the run's only one; several must be picked)."),
    recipe: Optional[str] = config_option(RouterConfig, "recipe", help="r2r: R2R's router size and training (6×1024 "
                                          "blocks, lr 5e-5, up to 50 epochs with early stopping); tokenmill: a small "
                                          "router trained a fixed number of steps."),
    steps: Optional[int] = config_option(RouterConfig, "steps", help="Training steps."),
    epochs: Optional[int] = config_option(RouterConfig, "epochs"),
    recall: Optional[float] = config_option(RouterConfig, "recall", help="Threshold: lowest positive rate with this "
                                            "recall of divergent tokens."),
    evaluate: bool = typer.Option(RouterConfig.model_fields["evaluate"].default,
                                  help="Evaluate routed generation after training."),
    world: Optional[str] = config_option(RouterConfig, "eval_world", help="World of the evaluation prompts."),
    prompts: Optional[int] = config_option(RouterConfig, "eval_prompts", help="Held-out prompts for the evaluation."),
    threshold: Optional[list[float]] = config_option(RouterConfig, "thresholds", help="More router thresholds for the "
                                                     "accuracy/share curve; repeatable."),
    seed: Optional[int] = config_option(RouterConfig, "seed", help="Seed of the split and the router's weights."),
    verbose: bool = typer.Option(False, help="Show Prefect logs."),
):
    """Train R2R's router on a run's routing labels, then compare routed generation with
    small-only, large-only and random routing at the same large-model share."""
    _quiet_prefect(verbose)
    from tokenmill.flows.train import router_flow

    cfg = RouterConfig(lake=lake, run_id=run_id, config_id=config_id, evaluate=evaluate, **given(
        recipe=recipe, steps=steps, epochs=epochs, recall=recall, eval_world=world, eval_prompts=prompts,
        thresholds=threshold or None, seed=seed))
    t0 = time.time()
    with console.status("training the router and generating with it…"):
        out = router_flow(cfg)
    _print_router(out, time.time() - t0)


@probe_app.command("train")
def probe_train(
    run_id: str = typer.Option(..., "--run", help="A run labelled with `tokenmill label --labelers hallucination`."),
    lake: str = LakeOpt,
    model: list[str] = typer.Option([], help="Probe these models' rollouts; repeatable (default: all with spans)."),
    layer: Optional[int] = config_option(ProbeConfig, "layer", help="Hidden-state layer (0 = embeddings; negative from "
                                         "the last)."),
    config_id: Optional[str] = typer.Option(None, "--config", help="Hallucination spans of this config id (default: the run's only one; several must be picked)."),
    kind: Optional[str] = config_option(ProbeConfig, "kind", help="linear (a value head on the stored hidden states) or "
                                        "lora (obalcells/hallucination_probes' LoRA probe: adapters on the layers up to "
                                        "--layer, KL to the base model)."),
    steps: Optional[int] = config_option(ProbeConfig, "steps", help="Training steps of the linear probe."),
    lora_steps: Optional[int] = config_option(ProbeConfig, "lora_steps", help="LoRA probe: stop after this many steps "
                                              "(default: one epoch over the training rollouts, as upstream)."),
    kl_weight: Optional[float] = config_option(ProbeConfig, "kl_weight", help="LoRA probe: weight λ of KL(base ‖ LoRA) "
                                               "in the loss (upstream's config 0.5; its released probes 0.05)."),
    seed: Optional[int] = config_option(ProbeConfig, "seed", help="Seed of the split and the probe's weights."),
    verbose: bool = typer.Option(False, help="Show Prefect logs."),
):
    """Train a hallucination probe per model (linear on one layer's hidden states, or LoRA)
    and compare its test-split AUC with the uncertainty scores (min/mean prob, entropy, CCP,
    consistency); its threshold is chosen on a separate validation split."""
    _quiet_prefect(verbose)
    from tokenmill.flows.train import probe_flow

    t0 = time.time()
    with console.status("scoring hidden states and training probes…" if kind != "lora" else "training LoRA probes…"):
        out = probe_flow(ProbeConfig(lake=lake, run_id=run_id, models=model or None, config_id=config_id,
                                     **given(layer=layer, kind=kind, steps=steps, lora_steps=lora_steps,
                                             kl_weight=kl_weight, seed=seed)))
    _print_probes(lake, run_id, out, time.time() - t0)


@ast_app.command("parse")
def ast_parse(
    paths: list[Path] = typer.Argument(..., help="Source files or directories (language by extension)."),
    lake: str = LakeOpt,
    run_id: Optional[str] = typer.Option(None, help="Run id for the parsed corpus; default: a new timestamped id."),
):
    """Parse source trees with tree-sitter into `ast_files` and `ast_nodes` (MLCPD's
    universal schema); unreadable or binary files are recorded as skipped."""
    from rich.progress import Progress

    from tokenmill.code.source_tree import parse_tree, source_files
    from tokenmill.config import new_run_id
    from tokenmill.report.summary import ast_file_summary, render_table
    from tokenmill.storage.lake import Lake, check_run_id

    run_id = run_id or new_run_id("ast")
    check_run_id(run_id)
    files = sum(1 for _ in source_files([str(p) for p in paths]))
    t0 = time.time()
    with Progress(console=console, transient=True) as prog:
        bar = prog.add_task("parse", total=files)
        written = parse_tree(Lake(lake), run_id, [str(p) for p in paths], progress=lambda n: prog.advance(bar, n))
    console.print(render_table(ast_file_summary(Lake(lake), run_id),
                               title=f"parsed {files} files into run {run_id} — {time.time() - t0:.1f} s, "
                                     f"{written['ast_nodes']:,} new nodes"))


@ast_app.command("export-mlcpd")
def ast_export_mlcpd(
    run_id: str = typer.Option(..., help="Run whose parsed files (`ast parse` or the ast labeler) to export."),
    out: Path = typer.Option(..., help="Directory for <language>_parsed_1.parquet (created if missing)."),
    lake: str = LakeOpt,
    fmt: str = typer.Option("parquet", "--format", help="parquet (MLCPD's dataset columns) or json (a list of "
                                                        "universal_schema objects, as MLCPD's examples)."),
    language: list[str] = typer.Option([], help="Only this language; repeatable (default: all)."),
):
    """Write parsed files in MLCPD's own layout (its dataset columns and universal_schema
    JSON, categories as MLCPD's converter assigns them), one file per language."""
    from tokenmill.code.mlcpd import export_mlcpd
    from tokenmill.storage.lake import Lake, check_run_id

    check_run_id(run_id)
    written = export_mlcpd(Lake(lake), run_id, out, fmt=fmt, languages=language or None)
    suffix = "parquet" if fmt == "parquet" else "json"
    for lang, n in written.items():
        console.print(f"{out / f'{lang}_parsed_1.{suffix}'}: {n:,} files")


def _print_probes(lake: str, run_id: str, out: dict, wall: float) -> None:
    from tokenmill.report.summary import probe_auc_table, render_table
    from tokenmill.storage.lake import Lake

    ids_ = [p["artifact_id"] for p in out["probes"].values()]
    console.print(render_table(probe_auc_table(Lake(lake), run_id, ids_),
                               title=f"hallucination detection, test-split ROC AUC — {wall:.1f} s wall time"))
    for m, p in out["probes"].items():
        test_f1 = f", test span F1 {p['test_span_f1']:.3f}" if "test_span_f1" in p else ""  # older probes lack it
        console.print(f"{p.get('kind', 'linear')} probe {p['artifact_id']} ({m}, layer {p['layer']}): threshold "
                      f"{p['threshold']:.3f} (validation span F1 {p['val_span_f1']:.3f}){test_f1}")
    for m, why in out.get("skipped", {}).items():
        console.print(f"no probe for {m}: {why}", highlight=False, markup=False)


def _print_router(out: dict, wall: float) -> None:
    import pyarrow as pa

    from tokenmill.report.summary import render_table

    r = out["router"]
    console.print(f"router [bold]{r['artifact_id']}[/] ({r['path']}): threshold {r['threshold']:.4f}; validation: "
                  f"{r['val']['positive_rate']:.1%} of tokens routed, recall {r['val']['recall']:.1%} of "
                  f"{r['val']['divergent']} divergent tokens")
    if out["eval"]:
        rows = [{**e, "threshold": None if e["threshold"] is None else round(e["threshold"], 4),
                 "large_share": round(e["large_share"], 3), "accuracy": round(e["accuracy"], 3)} for e in out["eval"]]
        console.print(render_table(pa.Table.from_pylist(rows), title=f"routed generation — {wall:.1f} s wall time"))


# config fields whose CLI option is not --<field>
CONFIG_OPTIONS = {("SourceConfig", "n"): "--prompts", ("SamplingConfig", "n"): "-n/--samples",
                  ("CriticalConfig", "beta"): "--critical-beta", ("CriticalConfig", "top_k"): "--critical-top-k",
                  ("ContrastTrainConfig", "lr"): "--train-lr", ("ContrastTrainConfig", "steps"): "--train-steps",
                  ("ContrastTrainConfig", "batch"): "--train-batch", ("ContrastTrainConfig", "epochs"): "--train-epochs"}


def main() -> None:
    import pydantic

    from tokenmill.labelers import families

    families()  # every family's tables known to the lake before any command reads it

    from tokenmill.errors import invalid_config

    try:
        try:
            app()
        except pydantic.ValidationError as e:  # a config field out of range: the field, not a traceback
            raise invalid_config(e, CONFIG_OPTIONS) from None
    except TokenmillError as e:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # one line
        sys.exit(2)


if __name__ == "__main__":
    main()
