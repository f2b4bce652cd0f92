"""What every stage's config shares: the lake default, run ids, where tasks run and
their timeouts. The bottom of the config models: stage configs import it, it imports no stage."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tokenmill import ids

DEFAULT_LAKE = "./tokenmill-lake"


class Settings(BaseModel):
    """The base of every config model: a field it does not have is refused (`promts: 3` in a
    deployment or an API call must not run the defaults silently)."""

    model_config = ConfigDict(extra="forbid")


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


class TimeoutConfig(Settings):
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


class RunnerConfig(Settings):
    """Where a flow's tasks run: threads in the flow's own process, or a Ray cluster — and
    how long they may take (`timeouts`).

    With Ray, shards run in parallel on the cluster's workers (each loads its own engine)
    and tasks that load a model ask Ray for `gpus` GPUs each.
    """

    kind: Literal["threads", "ray"] = "threads"
    address: str | None = Field(None, description="ray: the cluster (host:port, or ray://host:10001); none = a local Ray")
    gpus: float = Field(0, ge=0, description="ray: GPUs requested by each task that loads a model")
    timeouts: TimeoutConfig = TimeoutConfig()


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
