"""What `tokenmill label` runs over one run's rollouts: the shared settings, and one field
per label family holding that family's own config model (its defaults live there).

`LabelConfig` is built from the registry, so a new family's settings are a field here
without this file changing: `LabelConfig(labelers=["tvm"], tvm={"target": "reward"})`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, create_model

from tokenmill.common_config import DEFAULT_LAKE, RunId, RunnerConfig, Settings
from tokenmill.labelers import families


class LabelSettings(Settings):
    """What every labelling shares (the families' own settings are added per family)."""

    lake: str = DEFAULT_LAKE
    run_id: RunId
    labelers: list[str] = ["rewards", "critical"]
    models: dict[str, str] = Field(
        default_factory=lambda: {"ref": "tiny-small"},
        description="role → model for scoring (the role `policy` is always each rollout's own model)",
    )
    engine: str = Field("hf", description="engine of every model a labeler loads, where it has what the labeler needs")
    engine_options: dict[str, Any] = Field(default_factory=dict, description="options of that engine")
    score_roles: list[str] = Field(default_factory=list, description="extra roles to score even if no labeler needs them")
    hidden_layer: int | None = Field(None, description="also store this layer's hidden states (float16) for score_roles")
    runner: RunnerConfig = RunnerConfig()


LabelConfig = create_model(
    "LabelConfig", __base__=LabelSettings, __module__=__name__,
    **{name: (fam.config, Field(default_factory=fam.config, description=f"{fam.title} settings"))
       for name, fam in families().items()})
LabelConfig.__doc__ = __doc__.split("\n\n")[0]
