"""Run configuration: one place for defaults, validated by pydantic.

Flows take these models as parameters, so a Prefect deployment, the CLI and a test
describe a run the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from tokenmill.labelers.label_config import (  # noqa: F401  (re-exported: one import for flows and users)
    CONTRAST_RECIPES, REWARD_KINDS, AstConfig, ContrastTrainConfig, CriticalConfig, HallucinationConfig, LabelConfig,
    RewardsConfig, RoutingConfig, TruthConfig)
from tokenmill.common_config import (  # noqa: F401  (re-exported)
    DEFAULT_LAKE, RUN_ID_FIELDS, RunId, RunnerConfig, TimeoutConfig, expand_run_id, new_run_id)


class SourceConfig(BaseModel):
    """A prompt source: a built-in world (`world: arithmetic`) or a file (`path: x.jsonl`)."""

    world: str | None = None
    path: str | None = None
    n: int = Field(32, ge=1, description="prompts to draw from a world")
    split: str = "test"
    seed: int = 0
    limit: int | None = Field(None, description="read at most this many records of a file")
    prompt_field: str = "prompt"
    reference_field: str | None = None
    split_field: str | None = Field(None, description="record field holding each prompt's split (train/test)")
    meta_fields: list[str] = Field([], description="record fields copied into prompt meta: PATH (kept under its name) "
                                                    "or KEY=PATH, e.g. tests=test_list for the code-tests verifier")
    verifier: str | None = Field(None, description="how rollouts of this source are checked (tasks/verifiers.py: "
                                                    "text, math, regex, code-tests, reference-match); default: the "
                                                    "world's own, else reference-match where there is a reference")

    @field_validator("path")
    @classmethod
    def _one_kind(cls, v, info):
        if v is not None and info.data.get("world") is not None:
            raise ValueError("give either world or path, not both")
        return v

    def label(self) -> str:
        return f"world:{self.world}" if self.world else str(self.path)

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, v):
        if v is not None:
            from tokenmill.tasks.verifiers import get_verifier

            get_verifier(v)
        return v


class SamplingConfig(BaseModel):
    n: int = Field(4, ge=1, description="samples per prompt")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(96, ge=1)
    seed: int = 0
    logprobs: int = Field(5, ge=0, le=20, description="top-k alternatives kept per token")
    stop: list[str] = Field([], description="a completion also ends after the token completing one of these strings")
    stop_token_ids: list[int] = Field([], description="a completion also ends at these token ids (besides every EOS id)")


class RolloutConfig(BaseModel):
    lake: str = DEFAULT_LAKE
    run_id: RunId = Field(default_factory=new_run_id)
    sources: list[SourceConfig] = [SourceConfig(world="arithmetic")]
    models: list[str] = Field(["tiny-small"], description="bundled name, local path or hub id of each model")
    engine: str = Field("hf", description="hf (transformers) or vllm")
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="passed to the engine: e.g. max_model_len, tensor_parallel_size (vllm); device, dtype, batch_size (hf)",
    )
    sampling: SamplingConfig = SamplingConfig()
    chat_template: Literal["auto", "none"] = Field(
        "auto", description="auto: render prompts with each model's chat template where it has one; none: raw text")
    system_prompt: str | None = Field(None, description="system message (None: the chat template's own default)")
    shard_size: int = Field(64, ge=1, description="prompts per generation shard (one Prefect task each)")
    runner: RunnerConfig = RunnerConfig()

    def shard_tokens(self) -> int:
        """Most tokens one generate-shard task produces (its timeout's work)."""
        return self.shard_size * self.sampling.n * self.sampling.max_tokens

    def work_tokens(self) -> int:
        """Most tokens the whole run generates (the flow timeout's work); a file source
        without a limit counts as 10,000 prompts."""
        prompts = sum(s.n if s.world else (s.limit or 10_000) for s in self.sources)
        return prompts * self.sampling.n * self.sampling.max_tokens * len(self.models)


# ------------------------------------------------------------------ labelling

class RouterConfig(BaseModel):
    """What the `train-router` flow runs: R2R's router on a run's routing labels, then
    routed generation against small-only, large-only and random routing."""

    lake: str = DEFAULT_LAKE
    run_id: str
    config_id: str | None = Field(None, description="routing labels of this labeller config (default: the only one)")
    steps: int = Field(600, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch: int = Field(256, ge=1)
    val_frac: float = Field(0.2, gt=0, lt=1, description="share of prompts held out to set the threshold")
    recall: float = Field(0.95, gt=0, le=1, description="threshold: lowest positive rate with this recall of divergent tokens")
    seed: int = 0
    evaluate: bool = True
    eval_world: str = "arithmetic"
    eval_prompts: int = Field(128, ge=1)
    eval_split: str = "test"
    max_tokens: int = Field(96, ge=1)
    thresholds: list[float] = Field(default_factory=lambda: [0.5], description="more router thresholds for the curve")


class ProbeConfig(BaseModel):
    """What the `train-probe` flow runs: a hallucination probe per model of a labelled run."""

    lake: str = DEFAULT_LAKE
    run_id: str
    models: list[str] | None = Field(None, description="probe these models' rollouts (default: every model with spans)")
    layer: int = Field(-2, description="hidden_states index (0 = embeddings; negative from the last layer)")
    config_id: str | None = Field(None, description="hallucination spans of this labeller config (default: the only one)")
    steps: int = Field(400, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    lambda_max: float = Field(0.5, ge=0, le=1, description="final weight of the span-max term")
    anneal: float = Field(0.5, gt=0, le=1, description="share of the steps over which that weight grows from 0")
    val_frac: float = Field(0.25, gt=0, lt=1, description="share of prompts held out for evaluation")
    seed: int = 0


def config_values(model: type[BaseModel], given: BaseModel | None = None, overrides: dict | None = None) -> dict:
    """The field values of `model` that `given` (a config holding them, e.g. a TrainConfig for
    TrainSettings) and then `overrides` set; the rest stay the model's defaults. A name the model
    lacks is a TypeError: a typo must not fall back to a default."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(model.model_fields))
    if unknown:
        raise TypeError(f"{model.__name__} has no setting(s) {', '.join(unknown)}")
    base = given.model_dump(include=set(model.model_fields)) if given is not None else {}
    return {**base, **overrides}


def resolve(model: type[BaseModel], given: BaseModel | None = None, /, **overrides):
    """How a trainer takes its settings: `model` validated from `given` with `overrides` on top
    (`config_values`), so the config model is the one place its defaults live."""
    return model.model_validate(config_values(model, given, overrides))



class CurateConfig(BaseModel):
    """What the `curate` flow runs: one recipe over one or more runs → a dataset."""

    lake: str = DEFAULT_LAKE
    runs: list[RunId] = Field(min_length=1)
    recipe: str = Field(description="cdpo-pairs, dpo-pairs, weighted-sft, router-set, probe-set or sql:PATH")
    params: dict[str, Any] = Field(default_factory=dict, description="recipe parameters (see `tokenmill curate --help`)")


class TrainSettings(BaseModel):
    """How a token-weighted trainer runs (`tasks/train/weighted.py`)."""

    objective: Literal["sft", "dpo"] = "sft"
    weighting: Literal["dataset", "plain", "tgdpo"] = Field(
        "dataset", description="dataset: the curated weights; plain: loss masks only; tgdpo: TGDPO from token rewards")
    steps: int = Field(100, ge=1)
    lr: float = Field(5e-5, gt=0)
    batch: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    beta: float = Field(0.1, gt=0, description="dpo: β")
    alpha: float = Field(0.5, ge=0, description="tgdpo: α")
    seed: int = 0


class TrainConfig(TrainSettings):
    """What the `train` flow runs: a base model trained on a curated dataset."""

    lake: str = DEFAULT_LAKE
    dataset_id: str
    model: str = "tiny-small"
    run_id: str | None = Field(None, description="run whose partition gets the artifact and metrics (default: the dataset's first)")
    runner: RunnerConfig = RunnerConfig()

    def work_tokens(self) -> int:
        """Token passes of training (its timeout's work): steps × sequences × 512 tokens ×
        3 (forward and backward), × 2 for DPO's chosen and rejected."""
        return self.steps * self.batch * self.grad_accum * 512 * 3 * (2 if self.objective == "dpo" else 1)


class EvalConfig(BaseModel):
    """Greedy held-out accuracy of models on one world (`evaluate` flow → table `model_eval`)."""

    world: str = "arithmetic"
    split: str = "test"
    prompts: int = Field(200, ge=1)
    max_tokens: int = Field(96, ge=1)
    seed: int = 1234

    def work_tokens(self) -> int:
        """Most tokens one model's evaluation generates."""
        return self.prompts * self.max_tokens


class Arm(BaseModel):
    """One arm of a pipeline: curate with a recipe, train with settings."""

    name: str
    recipe: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainSettings = TrainSettings()
    guide: str | None = Field(None, description="TGDPO: an earlier arm whose trained model is π_dpo; the run is labelled "
                                                "with its `dpo` token rewards (β = 1) and the recipe reads them")
    needs_critical: dict[str, Any] = Field(default_factory=dict,
                                           description="critical-labeler settings this arm's recipe depends on; a pipeline "
                                                       "applies them, whatever entry point built it")


ARM_NAMES = ("dpo", "cdpo", "tgdpo", "sft", "sft-critical", "sft-reward")


def named_arms(names: list[str], dpo: dict | None = None, sft: dict | None = None, **common) -> list[Arm]:
    """The built-in arms, in a fixed order, with training settings (`common`, then the
    objective's own). tgdpo brings its guide, dpo, along.

      dpo         plain DPO on (correct, incorrect) pairs of a prompt   (dpo-pairs)
      cdpo        DPO with cDPO's 1 − p_CE on rejected tokens            (cdpo-pairs)
      tgdpo       DPO with TGDPO's weights from dpo's token rewards      (dpo-pairs, guide dpo)
      sft         plain SFT on correct rollouts                          (weighted-sft)
      sft-critical  SFT on correct rollouts, token weight p_CE: tokens the contrast
                  models flag as error-prone count less (needs critical.include_correct)
      sft-reward  SFT on all rollouts weighted max(A_grpo, 0)            (weighted-sft)
    """
    from tokenmill.errors import TokenmillError

    unknown = [n for n in names if n not in ARM_NAMES]
    if unknown:
        raise TokenmillError(f"unknown arm(s) {', '.join(unknown)}", fix=f"choose from {', '.join(ARM_NAMES)}")
    d = TrainSettings(**{**common, "objective": "dpo", **(dpo or {})})
    s = TrainSettings(**{**common, "objective": "sft", **(sft or {})})
    known = {
        "dpo": Arm(name="dpo", recipe="dpo-pairs", train=d.model_copy(update={"weighting": "plain"})),
        "cdpo": Arm(name="cdpo", recipe="cdpo-pairs", train=d.model_copy(update={"weighting": "dataset"})),
        "tgdpo": Arm(name="tgdpo", recipe="dpo-pairs", guide="dpo", train=d.model_copy(update={"weighting": "tgdpo"})),
        "sft": Arm(name="sft", recipe="weighted-sft", params={"where": "verdict = 'correct'"},
                   train=s.model_copy(update={"weighting": "plain"})),
        "sft-critical": Arm(name="sft-critical", recipe="weighted-sft",
                            params={"where": "verdict = 'correct'", "weight": "coalesce(p_ce, 1.0)"},
                            train=s.model_copy(update={"weighting": "dataset"}),
                            needs_critical={"include_correct": True}),  # p_CE on the correct rollouts it trains on
        "sft-reward": Arm(name="sft-reward", recipe="weighted-sft",
                          params={"where": "true", "weight": "greatest(coalesce(grpo, 0), 0)"},
                          train=s.model_copy(update={"weighting": "dataset"})),
    }
    wanted = set(names) | ({"dpo"} if "tgdpo" in names else set())
    return [known[n] for n in ARM_NAMES if n in wanted]


# Named pipelines, shared by `tokenmill pipeline --preset NAME` and a deployment's `cfg: {preset: NAME}`.
# A preset holds only what differs from the config models' own defaults; its values fill every field
# (also inside sub-configs: sampling, eval, critical, arm_train) that a config does not give. The
# default preset, DEFAULT_PRESET, applies wherever none is named, so `PipelineConfig()` is its experiment.
PIPELINE_PRESETS: dict[str, dict[str, Any]] = {
    # the bundled tiny-small on arithmetic: the nightly deployment, and `tokenmill pipeline` without --preset
    "tiny": {
        "sampling": {"n": 8, "max_tokens": 64},
        "arm_train": {"lr": 2e-5, "batch": 16},
        "eval": {"prompts": 500},
    },
    # SmolLM2-135M-Instruct (packaged; prompts in its chat template) with the authors' LoRA contrast
    # recipe (CriticalConfig's default): a starting point for a real checkpoint, not swept
    "smollm2": {
        "model": "smollm2-135m",
        "prompts": 128,
        "sampling": {"n": 4, "temperature": 0.7, "max_tokens": 96},
        "arm_train": {"batch": 8, "dpo": {"lr": 1e-6}, "sft": {"lr": 1e-5}},
        "eval": {"prompts": 200},
    },
    # one seed of `tokenmill study efficacy` (the README's table; studies/efficacy.py sets the seeds):
    # learning rates and β from a sweep on seed 0, the tiny contrast recipe (full fine-tune, 150 steps)
    "efficacy": {
        "prompts": 512,
        "sampling": {"n": 8, "max_tokens": 64},
        "critical": {"train": "tiny", "include_correct": True},
        "arms": ["dpo", "cdpo", "sft", "sft-critical", "sft-reward"],
        "arm_train": {"batch": 16, "dpo": {"steps": 100, "lr": 1e-5, "beta": 0.5}, "sft": {"steps": 150, "lr": 2e-5}},
        "eval": {"prompts": 2000, "max_tokens": 64},
    },
}
DEFAULT_PRESET = "tiny"
# what `arm_train` may set (for every named arm, or under `dpo` / `sft` for one objective's arms):
# objective and weighting are the arm's own
ARM_TRAIN_FIELDS = tuple(f for f in TrainSettings.model_fields if f not in ("objective", "weighting"))


def _given(value):
    """A sub-config as the fields it was given (a preset fills the rest); anything else as is."""
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


def merge_config(base: dict, over: dict) -> dict:
    """`over` on top of `base`, dicts (and sub-configs, by their given fields) merged key by key;
    anything else (a list, a number) in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(out.get(key), dict) and isinstance(value, (dict, BaseModel)):
            value = merge_config(out[key], _given(value))
        out[key] = value
    return out


class PipelineConfig(BaseModel):
    """rollouts → score → label → curate → train → evaluate, for each arm on one run."""

    preset: str = Field(DEFAULT_PRESET, description="named settings (config.PIPELINE_PRESETS: tiny, smollm2, efficacy) "
                                                    "filling every field not given")
    lake: str = DEFAULT_LAKE
    run_id: RunId = Field(default_factory=lambda: new_run_id("pipeline"))
    model: str = Field("tiny-small", description="the policy: rolls out, and is the base of every arm")
    world: str = Field("arithmetic", description="train split for the rollouts, test split for the evaluation")
    prompts: int = Field(256, ge=1, description="training prompts (the world's train split)")
    sampling: SamplingConfig = SamplingConfig()
    engine: str = Field("hf", description="hf or vllm")
    labelers: list[str] = ["rewards", "critical"]
    label_models: dict[str, str] = Field(default_factory=dict, description="scoring roles (default: ref = the policy)")
    critical: CriticalConfig = CriticalConfig()
    arm_train: dict[str, Any] = Field(default_factory=dict, description="training settings of the arms given by name: "
                                      "TrainSettings fields (steps, lr, batch, …) for every one, and under dpo / sft "
                                      "for one objective's arms")
    # `Arm | str` so that a deployment's parameter schema accepts `arms: [dpo, cdpo]`; names become Arms below
    arms: list[Arm | str] = Field(["dpo", "cdpo"], validate_default=True,
                                  description="arms, or names of the standard ones (dpo, cdpo, tgdpo, sft, sft-critical, "
                                              "sft-reward)")
    eval: EvalConfig = EvalConfig()
    runner: RunnerConfig = RunnerConfig()

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **fields) -> "PipelineConfig":
        """The pipeline of preset `name` with `fields` on top (sub-configs merged key by key)."""
        return cls.model_validate({**fields, "preset": name})

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        """The preset's values under what was given; the evaluation on the pipeline's own world
        unless it names another. An unknown preset is left to the field's check."""
        if not isinstance(data, dict) or data.get("preset", DEFAULT_PRESET) not in PIPELINE_PRESETS:
            return data
        data = merge_config(PIPELINE_PRESETS[data.get("preset", DEFAULT_PRESET)], data)
        if "world" in data:
            ev = data.get("eval", {})
            if isinstance(ev, dict):
                data["eval"] = {"world": data["world"], **ev}
            elif isinstance(ev, EvalConfig) and "world" not in ev.model_fields_set:
                data["eval"] = ev.model_copy(update={"world": data["world"]})
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v):
        if v not in PIPELINE_PRESETS:
            raise ValueError(f"unknown preset {v!r}; presets: {', '.join(PIPELINE_PRESETS)}")
        return v

    @field_validator("arm_train")
    @classmethod
    def _arm_train_fields(cls, v):
        for where, settings in [("", v), *((f"{o}.", v[o]) for o in ("dpo", "sft") if o in v)]:
            if not isinstance(settings, dict):
                raise ValueError(f"arm_train.{where.rstrip('.')} must be a mapping of training settings")
            unknown = [k for k in settings if k not in ARM_TRAIN_FIELDS and (where or k not in ("dpo", "sft"))]
            if unknown:
                raise ValueError(f"unknown training setting(s) {', '.join(where + k for k in unknown)}; "
                                 f"settings: {', '.join(ARM_TRAIN_FIELDS)} (and dpo / sft for one objective)")
        return v

    @field_validator("arms", mode="before")
    @classmethod
    def _named_arms(cls, v, info):
        if not isinstance(v, list):
            return v
        unknown = [a for a in v if isinstance(a, str) and a not in ARM_NAMES]
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(unknown)}; standard arms: {', '.join(ARM_NAMES)}")
        t = info.data.get("arm_train") or {}
        common = {k: x for k, x in t.items() if k not in ("dpo", "sft")}

        def named(names):
            return named_arms(names, dpo=t.get("dpo"), sft=t.get("sft"), **common)

        if all(isinstance(a, str) for a in v):
            return named(v)  # in the standard order, tgdpo's guide dpo included
        return [x for a in v for x in (named([a]) if isinstance(a, str) else [a])]

    @model_validator(mode="after")
    def _arm_needs(self):
        """Each arm's labelling needs (sft-critical: p_CE of correct rollouts too), here and not in
        one entry point, so a deployment or API call with `arms: [sft-critical]` gets them."""
        needs = {k: v for a in self.arms if isinstance(a, Arm) for k, v in a.needs_critical.items()}
        if needs and any(getattr(self.critical, k) != v for k, v in needs.items()):
            self.critical = self.critical.model_copy(update=needs)
        return self

    def rollouts(self) -> RolloutConfig:
        return RolloutConfig(lake=self.lake, run_id=self.run_id, models=[self.model], engine=self.engine,
                             sources=[SourceConfig(world=self.world, n=self.prompts, split="train", seed=self.sampling.seed)],
                             sampling=self.sampling, runner=self.runner)

    def label(self) -> LabelConfig:
        return LabelConfig(lake=self.lake, run_id=self.run_id, labelers=self.labelers, engine=self.engine,
                           models=self.label_models or {"ref": self.model}, critical=self.critical, runner=self.runner)

    def curate(self, arm: Arm) -> CurateConfig:
        return CurateConfig(lake=self.lake, runs=[self.run_id], recipe=arm.recipe, params=arm.params)

    def train(self, arm: Arm, dataset_id: str) -> TrainConfig:
        return TrainConfig(lake=self.lake, dataset_id=dataset_id, model=self.model, run_id=self.run_id, runner=self.runner,
                           **arm.train.model_dump())
