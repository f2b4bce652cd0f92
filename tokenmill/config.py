"""Run configuration: one place for defaults, validated by pydantic.

Flows take these models as parameters, so a Prefect deployment, the CLI and a test
describe a run the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

# every stage's config model, defined next to its code, importable from here (one import for flows and users)
from tokenmill.labelers.ast.config import AstConfig  # noqa: F401
from tokenmill.labelers.critical.config import CriticalConfig, TruthConfig  # noqa: F401
from tokenmill.labelers.hallucination.config import HallucinationConfig  # noqa: F401
from tokenmill.labelers.label_config import LabelConfig, LabelSettings  # noqa: F401
from tokenmill.labelers.rewards.config import REWARD_KINDS, RewardsConfig  # noqa: F401
from tokenmill.labelers.routing.config import RoutingConfig  # noqa: F401
from tokenmill.tasks.train.finetune_config import CONTRAST_RECIPES, ContrastTrainConfig  # noqa: F401
from tokenmill.common_config import (  # noqa: F401
    Settings, DEFAULT_LAKE, RUN_ID_FIELDS, RunId, RunnerConfig, TimeoutConfig, config_values, expand_run_id, new_run_id, resolve)
from tokenmill.curation.curate_config import CurateConfig  # noqa: F401
from tokenmill.tasks.eval_config import EvalConfig  # noqa: F401
from tokenmill.tasks.rollout_config import RolloutConfig, SamplingConfig, SourceConfig  # noqa: F401
from tokenmill.tasks.train.probe_config import ProbeConfig  # noqa: F401
from tokenmill.tasks.train.router_config import RouterConfig  # noqa: F401
from tokenmill.tasks.train.weighted_config import TrainConfig, TrainSettings  # noqa: F401


class Arm(Settings):
    """One arm of a pipeline: curate with a recipe, train with settings."""

    name: str
    recipe: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainSettings = TrainSettings()
    guide: str | None = Field(None, description="TGDPO: an earlier arm whose trained model is π_dpo; the run is labelled "
                                                "with its `dpo` token rewards (β = 1) and the recipe reads them")
    init: str | None = Field(None, description="an earlier arm whose trained model this arm starts from, and (dpo, "
                                               "tdpo) its frozen reference: SFT then DPO")
    needs_critical: dict[str, Any] = Field(default_factory=dict,
                                           description="critical-labeler settings this arm's recipe depends on; a pipeline "
                                                       "applies them, whatever entry point built it")

    def scopes_read(self) -> set[tuple[str, str]]:
        """(family, scope) of every token output this arm's weighted-sft expressions use (a
        rewards scope is its kind)."""
        import re

        from tokenmill import labelers

        if self.recipe != "weighted-sft":
            return set()
        text = f"{self.params.get('weight', '')} {self.params.get('where', '')}"
        return {(fam.name, sc.name) for fam, sc, o in labelers.outputs() if re.search(rf"\b{o.name}\b", text)}

    def families_read(self) -> set[str]:
        """The label families whose token outputs this arm's weighted-sft expressions use."""
        return {fam for fam, _ in self.scopes_read()}


ARM_NAMES = ("dpo", "cdpo", "tgdpo", "tdpo", "sft", "sft-critical", "sft-reward", "sft-process", "sft-entropy",
             "sft-routing", "dpo-on-sft", "cdpo-on-sft", "tgdpo-on-sft", "tdpo-on-sft")
# sft-routing's token weight per R2R class (identical, neutral, divergent, undecidable); docs/BENCHMARKS.md has the pilot
ROUTING_WEIGHTS = (1.0, 0.0, 2.0, 1.0)


def named_arms(names: list[str], dpo: dict | None = None, sft: dict | None = None, **common) -> list[Arm]:
    """The built-in arms, in a fixed order, with training settings (`common`, then the
    objective's own; tdpo takes dpo's). An arm brings the arms it starts from and is guided by.

      dpo         plain DPO on (correct, incorrect) pairs of a prompt   (dpo-pairs)
      cdpo        DPO with cDPO's 1 − p_CE on rejected tokens            (cdpo-pairs)
      tgdpo       DPO with TGDPO's weights from dpo's token rewards      (dpo-pairs, guide dpo)
      tdpo        TDPO: DPO with a token-level KL(π_ref ‖ π_θ) term       (dpo-pairs)
      sft         plain SFT on correct rollouts                          (weighted-sft)
      sft-critical  SFT on correct rollouts, token weight p_CE: tokens the contrast
                  models flag as error-prone count less (needs critical.include_correct)
      sft-reward  SFT on all rollouts weighted max(A_grpo, 0)            (weighted-sft)
      sft-process the oracle's upper bound: SFT on every rollout's tokens before its first
                  wrong step (the `process` labels; needs the process labeler)
      sft-entropy SFT on correct rollouts, only their high-entropy tokens (the 80/20 rule:
                  `entropy_flag`, the top 20 % of the rollout model's own entropies)
      sft-routing distillation weighted by R2R's routing labels of the teacher's correct
                  rollouts against the policy: ROUTING_WEIGHTS per class — identical 1,
                  neutral 0 (the policy's own token does as well), divergent 2 (its token
                  makes the answer worse), undecidable 1; needs a teacher (routing labels a
                  large model's rollouts)
      dpo-on-sft  dpo from sft's trained model, which is also its reference (SFT then DPO:
                  the pairs are in the model's distribution); brings sft along
      cdpo-on-sft cdpo from sft's trained model likewise
      tgdpo-on-sft  tgdpo from sft's model, its guide dpo-on-sft (whose reference, sft, is
                  the reference of the guide's token rewards); brings both along
      tdpo-on-sft tdpo from sft's model likewise
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
        "tdpo": Arm(name="tdpo", recipe="dpo-pairs", train=d.model_copy(update={"objective": "tdpo", "weighting": "plain"})),
        "sft": Arm(name="sft", recipe="weighted-sft", params={"where": "verdict = 'correct'"},
                   train=s.model_copy(update={"weighting": "plain"})),
        "sft-critical": Arm(name="sft-critical", recipe="weighted-sft",
                            params={"where": "verdict = 'correct'", "weight": "coalesce(p_ce, 1.0)"},
                            train=s.model_copy(update={"weighting": "dataset"}),
                            needs_critical={"include_correct": True}),  # p_CE on the correct rollouts it trains on
        "sft-reward": Arm(name="sft-reward", recipe="weighted-sft",
                          params={"where": "true", "weight": "greatest(coalesce(grpo, 0), 0)"},
                          train=s.model_copy(update={"weighting": "dataset"})),
        "sft-process": Arm(name="sft-process", recipe="weighted-sft",
                           params={"where": "verdict IN ('correct', 'incorrect')", "weight": "coalesce(process_ok::INT, 0)"},
                           train=s.model_copy(update={"weighting": "dataset"})),
        "sft-entropy": Arm(name="sft-entropy", recipe="weighted-sft",
                           params={"where": "verdict = 'correct'", "weight": "coalesce(entropy_flag::INT, 0)"},
                           train=s.model_copy(update={"weighting": "dataset"})),
        "sft-routing": Arm(name="sft-routing", recipe="weighted-sft", params={"where": "verdict = 'correct'", "weight": (
                               "CASE routing WHEN 'identical' THEN {} WHEN 'neutral' THEN {} WHEN 'divergent' THEN {} "
                               "WHEN 'undecidable' THEN {} END".format(*ROUTING_WEIGHTS))},  # null where unlabelled: refused, never silently 1
                           train=s.model_copy(update={"weighting": "dataset"})),
        "dpo-on-sft": Arm(name="dpo-on-sft", recipe="dpo-pairs", init="sft", train=d.model_copy(update={"weighting": "plain"})),
        "cdpo-on-sft": Arm(name="cdpo-on-sft", recipe="cdpo-pairs", init="sft",
                           train=d.model_copy(update={"weighting": "dataset"})),
        "tgdpo-on-sft": Arm(name="tgdpo-on-sft", recipe="dpo-pairs", init="sft", guide="dpo-on-sft",
                            train=d.model_copy(update={"weighting": "tgdpo"})),
        "tdpo-on-sft": Arm(name="tdpo-on-sft", recipe="dpo-pairs", init="sft",
                           train=d.model_copy(update={"objective": "tdpo", "weighting": "plain"})),
    }
    wanted, todo = set(), list(names)
    while todo:  # every arm brings the arms it starts from (init) and is guided by (guide)
        n = todo.pop()
        if n not in wanted:
            wanted.add(n)
            todo += [d for d in (known[n].init, known[n].guide) if d is not None]
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
    # one seed of `tokenmill study efficacy` (studies/efficacy_config.py's defaults; the study sets the seeds):
    # tiny-small distilled from tiny-large's rollouts on 4,096 distinct prompts (docs/BENCHMARKS.md)
    "efficacy": {
        "teacher": "tiny-large",
        "prompts": 4096,
        "sampling": {"n": 2, "max_tokens": 64},
        "labelers": ["rewards", "critical", "process", "routing"],
        "critical": {"train": "tiny", "include_correct": True},
        "rewards": {"kinds": ["grpo", "entropy"]},  # the kinds an arm reads (sft-reward, sft-entropy)
        "routing": {"small": "tiny-small", "features": False},  # sft-routing's weights; no router is trained
        "arms": ["dpo", "cdpo", "sft", "sft-critical", "sft-reward", "sft-process", "sft-entropy", "sft-routing",
                 "dpo-on-sft", "cdpo-on-sft"],
        "arm_train": {"batch": 16, "dpo": {"steps": 300, "lr": 4e-5, "beta": 0.1, "schedule": "linear"},
                      "sft": {"steps": 500, "lr": 1e-3, "schedule": "linear"}},
        "eval": {"prompts": 500, "max_tokens": 64},
    },
}
DEFAULT_PRESET = "tiny"
# what `arm_train` may set (for every named arm, or under `dpo` / `sft` for one objective's arms;
# `dpo` also sets the tdpo arm's): objective and weighting are the arm's own
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


class PipelineConfig(Settings):
    """rollouts → score → label → curate → train → evaluate, for each arm on one run."""

    preset: str = Field(DEFAULT_PRESET, description="named settings (config.PIPELINE_PRESETS: tiny, smollm2, efficacy) "
                                                    "filling every field not given")
    lake: str = DEFAULT_LAKE
    run_id: RunId = Field(default_factory=lambda: new_run_id("pipeline"))
    model: str = Field("tiny-small", description="the policy: rolls out, and is the base of every arm")
    teacher: str | None = Field(None, description="distillation: this model rolls out instead of the policy (same "
                                                  "tokenizer); the arms still train, and the evaluation still "
                                                  "compares against, the policy")
    world: str = Field("arithmetic", description="train split for the rollouts, test split for the evaluation")
    prompts: int = Field(256, ge=1, description="training prompts (the world's train split)")
    sampling: SamplingConfig = SamplingConfig()
    engine: str = Field("hf", description="hf or vllm")
    labelers: list[str] = ["rewards", "critical"]
    label_models: dict[str, str] = Field(default_factory=dict, description="scoring roles (default: ref = the policy)")
    critical: CriticalConfig = CriticalConfig()
    rewards: RewardsConfig = Field(RewardsConfig(), description="token-rewards settings (kinds: every one by default; "
                                                                "a study computes the ones its arms read)")
    routing: RoutingConfig | None = Field(None, description="routing-labeler settings (default: R2R's, the policy as "
                                                            "the small model, so the teacher's rollouts are labelled)")
    arm_train: dict[str, Any] = Field(default_factory=dict, description="training settings of the arms given by name: "
                                      "TrainSettings fields (steps, lr, batch, …) for every one, and under dpo / sft "
                                      "for one objective's arms (dpo: the tdpo arm's too)")
    # `Arm | str` so that a deployment's parameter schema accepts `arms: [dpo, cdpo]`; names become Arms below
    arms: list[Arm | str] = Field(["dpo", "cdpo"], validate_default=True,
                                  description=f"arms, or names of the standard ones ({', '.join(ARM_NAMES)})")
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
        return RolloutConfig(lake=self.lake, run_id=self.run_id, models=[self.teacher or self.model], engine=self.engine,
                             sources=[SourceConfig(world=self.world, n=self.prompts, split="train", seed=self.sampling.seed)],
                             sampling=self.sampling, runner=self.runner)

    def label(self) -> LabelConfig:
        return LabelConfig(lake=self.lake, run_id=self.run_id, labelers=self.labelers, engine=self.engine,
                           models=self.label_models or {"ref": self.model}, critical=self.critical, rewards=self.rewards,
                           routing=self.routing or RoutingConfig(small=self.model), runner=self.runner)

    def curate(self, arm: Arm) -> CurateConfig:
        return CurateConfig(lake=self.lake, runs=[self.run_id], recipe=arm.recipe, params=arm.params)

    def train(self, arm: Arm, dataset_id: str) -> TrainConfig:
        return TrainConfig(lake=self.lake, dataset_id=dataset_id, model=self.model, run_id=self.run_id, runner=self.runner,
                           **arm.train.model_dump())
