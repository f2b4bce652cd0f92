"""Run configuration: one place for defaults, validated by pydantic.

Flows take these models as parameters, so a Prefect deployment, the CLI and a test
describe a run the same way.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from tokenmill import ids

DEFAULT_LAKE = "./tokenmill-lake"


def new_run_id(prefix: str = "run") -> str:
    now = datetime.now(timezone.utc)
    return f"{prefix}-{now:%Y%m%dT%H%M%S}-{ids.content_id(now.isoformat())[:6]}"


RUN_ID_FIELDS = ("date", "datetime")


def expand_run_id(run_id: str) -> str:
    """`nightly-{date}` → `nightly-20261122` (UTC, when the config is built).

    A scheduled deployment keeps one parameter set for every night; the template gives each
    night its own run, and a retry on the same day the same run (so it only adds what is missing).
    """
    if "{" not in run_id:
        return run_id
    now = datetime.now(timezone.utc)
    try:
        return run_id.format(date=f"{now:%Y%m%d}", datetime=f"{now:%Y%m%dT%H%M%S}")
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"run_id template {run_id!r}: the only placeholders are "
                         + ", ".join("{" + f + "}" for f in RUN_ID_FIELDS)) from None


# a run id that may be a template (`nightly-{date}`), expanded when the config is built
RunId = Annotated[str, AfterValidator(expand_run_id)]


class TimeoutConfig(BaseModel):
    """Timeouts of flows and of tasks that load a model, sized from their work, so that a
    hung night gives its deployment's concurrency slot back instead of holding it forever.

    timeout = max(min_s, tokens × seconds_per_token), where `tokens` is the most model work
    the flow or task can do (generated + scored tokens, from the config: prompts × samples ×
    max_tokens, …). The default budget, 0.05 s a token, is ~3× what SmolLM2-135M costs on 2
    CPU cores (docs/BENCHMARKS.md); a larger model or a slower machine needs a larger one.
    """

    seconds_per_token: float = Field(0.05, gt=0, description="budget per token of model work")
    min_s: float = Field(900.0, gt=0, description="no flow or model task gets less")
    task_s: float | None = Field(None, gt=0, description="override: the timeout of every model task")
    flow_s: float | None = Field(None, gt=0, description="override: the timeout of every flow")
    enabled: bool = Field(True, description="false: no timeouts at all")

    def task(self, tokens: float) -> float | None:
        """Seconds a model task doing `tokens` tokens of work may take (None: no limit)."""
        if not self.enabled:
            return None
        return self.task_s if self.task_s is not None else max(self.min_s, tokens * self.seconds_per_token)

    def flow(self, tokens: float) -> float | None:
        """Seconds a flow doing `tokens` tokens of work may take (None: no limit)."""
        if not self.enabled:
            return None
        return self.flow_s if self.flow_s is not None else max(self.min_s, tokens * self.seconds_per_token)


class RunnerConfig(BaseModel):
    """Where a flow's tasks run: threads in the flow's own process, or a Ray cluster — and
    how long they may take (`timeouts`).

    With Ray, shards run in parallel on the cluster's workers (each loads its own engine)
    and tasks that load a model ask Ray for `gpus` GPUs each.
    """

    kind: Literal["threads", "ray"] = "threads"
    address: str | None = Field(None, description="ray: the cluster (host:port, or ray://host:10001); none = a local Ray")
    gpus: float = Field(0, ge=0, description="ray: GPUs requested by each task that loads a model")
    timeouts: TimeoutConfig = TimeoutConfig()


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
    models: list[str] = ["tiny-small", "tiny-large"]
    engine: str = "hf"
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

REWARD_KINDS = ("dpo", "grpo", "tempo", "d3s", "entropy", "rlpr")


class RewardsConfig(BaseModel):
    kinds: list[str] = list(REWARD_KINDS)
    beta: float = Field(0.1, gt=0, description="dpo: β")
    clip: float | None = Field(None, gt=0, description="dpo: clip rewards to ±clip")
    dpo_role: str = Field("policy", description="dpo: the role scored as π_dpo")
    ref_role: str = Field("ref", description="dpo: the role scored as π_ref")
    eps: float = 1e-6
    normalize: bool = Field(True, description="grpo/tempo: divide by the group's std")
    keep_frac: float = Field(0.2, gt=0, le=1, description="d3s: share of the shard's tokens kept")
    d3s_advantage: str = Field("grpo", description="d3s: grpo or tempo advantages")
    window: int = Field(5, ge=1, description="entropy: sliding window (tokens)")
    threshold: float | None = Field(None, description="entropy: high-window threshold τ (default: a quantile)")
    quantile: float = Field(0.8, gt=0, lt=1, description="entropy: τ as this quantile of the shard's window means")



class ContrastTrainConfig(BaseModel):
    """How cDPO's positive / negative contrast models are fine-tuned from the policy. The
    defaults are the cDPO authors' recipe (recipe `cdpo`; what they run and where tokenmill
    differs: tasks/labels/critical.py); recipe `tiny` is the full fine-tune tuned for the
    bundled tiny models (`ContrastTrainConfig.named("tiny")`)."""

    method: Literal["lora", "full"] = Field("lora", description="lora: adapters on `lora_targets`, merged into the "
                                            "weights after training; full: every weight trained")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW)")
    epochs: int = Field(1, ge=1, description="passes over the training rollouts (when `steps` is unset)")
    steps: int | None = Field(None, ge=1, description="optimizer steps; overrides `epochs`")
    batch: int = Field(6, ge=1, description="sequences per optimizer step")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up from 0 (steps)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning rate after warm-up")
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling = lora_alpha / lora_r")
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_targets: list[str] = Field(["gate_proj", "up_proj", "down_proj"], description="names of the Linear modules "
                                    "that get adapters")
    data: Literal["cdpo", "all"] = Field("cdpo", description="cdpo: per prompt, one correct rollout (pos) and one "
                                         "rollout per incorrect answer until half the prompt's incorrect rollouts "
                                         "are covered (neg); all: every correct / incorrect rollout")
    save_dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="dtype of the saved (merged) weights")

    @classmethod
    def named(cls, recipe: str, **overrides) -> "ContrastTrainConfig":
        if recipe not in CONTRAST_RECIPES:
            from tokenmill.errors import TokenmillError

            raise TokenmillError(f"unknown contrast-model recipe {recipe!r}", fix=f"use one of {', '.join(CONTRAST_RECIPES)}")
        return cls(**{**CONTRAST_RECIPES[recipe], **overrides})


CONTRAST_RECIPES: dict[str, dict] = {
    "cdpo": {},  # the defaults above
    # what the bundled 1k-vocabulary models learn from in a few seconds on CPU (tokenmill's
    # settings before the authors' recipe became the default)
    "tiny": {"method": "full", "lr": 5e-4, "steps": 150, "batch": 16, "warmup_steps": 0, "schedule": "constant",
             "data": "all", "save_dtype": "float32"},
}
_LEGACY_TRAIN = {"train_steps": "steps", "train_lr": "lr", "train_batch": "batch"}


class CriticalConfig(BaseModel):
    beta: float = Field(1.0, ge=0, description="contrast strength β")
    top_k: int | None = Field(3, ge=1, description="mark this many lowest-p_CE tokens per rollout critical")
    threshold: float | None = Field(None, gt=0, lt=1, description="or: mark tokens with p_CE below this")
    include_correct: bool = Field(False, description="also label correct rollouts")
    train: ContrastTrainConfig = Field(default_factory=ContrastTrainConfig,
                                       description="contrast-model training: settings, or a recipe name (cdpo, tiny)")
    seed: int = 0
    logits_memory_mb: float = Field(512.0, gt=0, description="most MiB of [tokens, vocab] float32 arrays one p_CE pass "
                                    "keeps alive (sets the tokens per LM-head call; results do not depend on it)")

    @field_validator("train", mode="before")
    @classmethod
    def _recipe_name(cls, v):
        return ContrastTrainConfig.named(v) if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _flat_train_fields(cls, data):
        """train_steps / train_lr / train_batch: the flat spellings, applied over `train`."""
        if not isinstance(data, dict) or not _LEGACY_TRAIN.keys() & data.keys():
            return data
        data = dict(data)
        train = data.get("train", "cdpo")
        train = ContrastTrainConfig.named(train) if isinstance(train, str) else train
        train = train.model_dump() if isinstance(train, BaseModel) else dict(train)
        for old, new in _LEGACY_TRAIN.items():
            if old in data and data[old] is not None:
                train[new] = data[old]
            data.pop(old, None)
        data["train"] = train
        return data



class TruthConfig(BaseModel):
    rollouts: int = Field(16, ge=1, description="incorrect rollouts to examine")
    k: int = Field(4, ge=1, description="continuations per arm (kept / replaced)")
    margin: float = Field(0.25, gt=0, le=1, description="truly critical: replaced − kept success ≥ margin")
    max_tokens: int = Field(64, ge=1)
    seed: int = 0


class RoutingConfig(BaseModel):
    """R2R routing labels of a large model's trajectories against a small model."""

    small: str = Field("tiny-small", description="the small model; rollouts of every other model are labelled")
    verifier: Literal["outcome", "judge"] = Field("outcome", description="outcome: continue to the end and compare "
                                                   "rewards (exact-answer worlds); judge: a model compares two sentences")
    judge_model: str | None = Field(None, description="judge verifier's model (default: the large model)")
    judge_template: str | None = Field(None, description="judge prompt with {context}, {reference}, {candidate} "
                                                          "(default: R2R's prompt)")
    judge_tokens: int = Field(24, ge=1, description="judge: tokens of its reply")
    unparsable: Literal["divergent", "neutral"] = Field("divergent", description="label of a judge reply without 0/1")
    sentences: int = Field(2, ge=1, description="continuations stop after this many sentence ends (R2R: 2)")
    continuation_tokens: int = Field(48, ge=1, description="judge: most tokens of a continuation")
    outcome_tokens: int = Field(128, ge=1, description="outcome: most tokens to continue to the end")
    top_k: int = Field(100, ge=1, description="router features: top-k logits of the small model")


class HallucinationConfig(BaseModel):
    """Entity spans, their ground truth and uncertainty scores."""

    extractors: list[str] | None = Field(None, description="span extractors (default: kb — the world's own claims — "
                                                            "for bios and countries rollouts; numbers, dates, names, "
                                                            "titles for the rest)")
    annotator: Literal["kb", "none"] = Field("kb", description="ground truth: the rollout's knowledge-base world "
                                                               "(bios people, countries facts) judges each span, or none")
    verdicts_file: str | None = Field(None, description="JSONL span verdicts in the paper's format (span, label, index)")
    judge: Literal["surface"] = Field("surface", description="CCP equivalence judge")


class AstConfig(BaseModel):
    """Where the code in completions is and which language it is."""

    language: str | None = Field(None, description="language of code without a fence tag (default: python for the code and humaneval worlds)")
    whole_completion_worlds: list[str] = Field(default_factory=lambda: ["code", "humaneval"],
                                               description="worlds whose unfenced completion is code as a whole")


class LabelConfig(BaseModel):
    """What `tokenmill label` runs over one run's rollouts."""

    lake: str = DEFAULT_LAKE
    run_id: RunId
    labelers: list[str] = ["rewards", "critical"]
    models: dict[str, str] = Field(
        default_factory=lambda: {"ref": "tiny-small"},
        description="role → model for scoring (the role `policy` is always each rollout's own model)",
    )
    engine: str = "hf"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    score_roles: list[str] = Field(default_factory=list, description="extra roles to score even if no labeler needs them")
    hidden_layer: int | None = Field(None, description="also store this layer's hidden states (float16) for score_roles")
    rewards: RewardsConfig = RewardsConfig()
    critical: CriticalConfig = CriticalConfig()
    routing: RoutingConfig = RoutingConfig()
    hallucination: HallucinationConfig = HallucinationConfig()
    ast: AstConfig = AstConfig()
    runner: RunnerConfig = RunnerConfig()


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


class PipelineConfig(BaseModel):
    """rollouts → score → label → curate → train → evaluate, for each arm on one run."""

    lake: str = DEFAULT_LAKE
    run_id: RunId = Field(default_factory=lambda: new_run_id("pipeline"))
    model: str = Field("tiny-small", description="the policy: rolls out, and is the base of every arm")
    world: str = "arithmetic"
    prompts: int = Field(256, ge=1, description="training prompts (the world's train split)")
    sampling: SamplingConfig = SamplingConfig(n=8)
    engine: str = "hf"
    labelers: list[str] = ["rewards", "critical"]
    label_models: dict[str, str] = Field(default_factory=dict, description="scoring roles (default: ref = the policy)")
    critical: CriticalConfig = CriticalConfig()
    # `Arm | str` so that a deployment's parameter schema accepts `arms: [dpo, cdpo]`; names become Arms below
    arms: list[Arm | str] = Field(default_factory=lambda: named_arms(["dpo", "cdpo"]),
                                  description="arms, or names of the standard ones (dpo, cdpo, tgdpo, sft, sft-critical, "
                                              "sft-reward)")
    eval: EvalConfig = EvalConfig()
    runner: RunnerConfig = RunnerConfig()

    @field_validator("arms", mode="before")
    @classmethod
    def _named_arms(cls, v):
        if not isinstance(v, list):
            return v
        unknown = [a for a in v if isinstance(a, str) and a not in ARM_NAMES]
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(unknown)}; standard arms: {', '.join(ARM_NAMES)}")
        if all(isinstance(a, str) for a in v):
            return named_arms(v)  # in the standard order, tgdpo's guide dpo included
        return [x for a in v for x in (named_arms([a]) if isinstance(a, str) else [a])]

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
