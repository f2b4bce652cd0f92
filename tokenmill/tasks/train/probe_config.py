"""Settings of hallucination-probe training (`probe.py`, the LoRA variant `probe_lora.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.common_config import DEFAULT_LAKE, Settings


class ProbeConfig(Settings):
    """What the `train-probe` flow runs: a hallucination probe per model of a labelled run.
    `steps`, `lr`, `weight_decay` are the linear probe's; the `lora_*`, `kl_weight`,
    `head_lr` settings the LoRA probe's (obalcells/hallucination_probes' train_config.yaml);
    the loss settings and the splits are both kinds'."""

    lake: str = DEFAULT_LAKE
    run_id: str
    models: list[str] | None = Field(None, description="probe these models' rollouts (default: every model with spans)")
    kind: Literal["linear", "lora"] = Field(
        "linear", description="linear — a value head on the stored hidden states; lora — upstream's LoRA probe: the "
                              "head trained with LoRA adapters on the layers up to `layer` and a KL term to the base model")
    layer: int = Field(-2, description="hidden_states index (0 = embeddings; negative from the last layer)")
    config_id: str | None = Field(None, description="hallucination spans of this labeller config (default: the only one)")
    steps: int = Field(400, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    lambda_max: float = Field(1.0, ge=0, le=1, description="final weight of the span-max term (upstream: 1, the "
                                                           "loss ends span-level; tokenmill's earlier default 0.5)")
    anneal: float = Field(1.0, gt=0, le=1, description="share of the steps over which that weight grows from 0 "
                                                       "(upstream anneal_warmup: 1.0; tokenmill's earlier 0.5)")
    token_weighting: Literal["span", "balanced"] = Field(
        "span", description="token BCE weights: span — every token of a labelled span ×`span_weight`, the rest ×1 "
                            "(upstream's pos/neg weights); balanced — positives ×n_neg/n_pos (tokenmill's variant)")
    span_weight: float = Field(10.0, gt=0, description="token weighting span: weight of span tokens")
    outside: Literal["negative", "ignore"] = Field(
        "negative", description="tokens outside every span: negative — label 0 (upstream's long-form setting); "
                                "ignore — left out (tokenmill's variant)")
    val_frac: float = Field(0.25, gt=0, lt=1, description="share of prompts held out from training (validation + test)")
    threshold_frac: float = Field(0.5, gt=0, lt=1, description="share of the held-out prompts that is the validation "
                                                               "split, where the threshold is chosen (at least one "
                                                               "prompt, never all); the rest is the test split every "
                                                               "figure is reported on")
    lora_r: int = Field(16, ge=1, description="lora: adapter rank (upstream 16)")
    lora_alpha: float = Field(32.0, gt=0, description="lora: LoRA scaling = lora_alpha / lora_r (upstream 32)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="lora: dropout on the adapters' input (upstream 0.05)")
    lora_targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                    description="lora: Linear modules adapted in each chosen decoder layer (upstream: "
                                                "attention and MLP projections)")
    lora_layers: list[int] | None = Field(None, description="lora: decoder layers to adapt (default: every one up to "
                                                            "the probe's layer, upstream's \"all\")")
    kl_weight: float = Field(0.5, ge=0, lt=1, description="lora: λ_KL, loss = λ_KL·KL(base ‖ LoRA) + (1 − λ_KL)·probe "
                                                          "loss (upstream train_config 0.5; its released probes 0.05)")
    head_lr: float = Field(1e-3, gt=0, description="lora: learning rate of the value head (upstream probe_head_lr)")
    lora_lr: float = Field(1e-4, gt=0, description="lora: learning rate of the adapters (upstream lora_lr)")
    lora_batch: int = Field(4, ge=1, description="lora: rollouts per step (upstream per_device_train_batch_size)")
    lora_epochs: int = Field(1, ge=1, description="lora: passes over the training rollouts (upstream num_train_epochs)")
    lora_steps: int | None = Field(None, ge=1, description="lora: stop after this many steps (upstream max_steps; "
                                                           "default: `lora_epochs` epochs)")
    seed: int = 0
