"""Critical tokens by contrastive estimation — Lin et al. 2024, "Critical Tokens Matter:
Token-Level Contrastive Estimation Enhances LLM's Reasoning Capability" (cDPO).

1. From the policy π, fine-tune a positive model p_pos on its *correct* rollouts and a
   negative model p_neg on its *incorrect* rollouts (`prepare`; saved as model artifacts
   in the lake with their lineage, table `model_artifacts`).
2. Score each incorrect rollout (optionally the correct ones too) under both, over the
   full vocabulary, and per token t combine

       s_t(v)     = (1 + β)·log p_pos(v | x, y_<t) − β·log p_neg(v | x, y_<t)
       p_CE(y_t)  = softmax_v(s_t)[y_t]
       w_t        = 1 − p_CE(y_t)                       (β = 1 by default)

   A token the negative model likes far more than the positive one gets a low p_CE: it
   is a likely critical token. `is_critical` marks the `top_k` lowest-p_CE tokens of each
   rollout (or those with p_CE < `threshold`). Table `critical`; the pos/neg statistics
   also go to `scores` (roles `pos`, `neg`).
3. Ground truth as the paper defines it and the authors' rollout_sampling_for_critical_tokens.py
   computes it (`critical_truth`, `TruthConfig.definition = "paper"`): at every position t of
   an incorrect rollout, k = 64 continuations of the kept prefix y_≤t, and 64 alternative
   tokens v' ~ π(· | y_<t) with π(y_t) set to 0, each continued once; all verified. The
   critical token is the first position whose kept continuations all fail — unless a later
   prefix has more than `recover` = 3 correct ones, in which case the scan starts again
   after it and falls back to that first candidate if it finds no other (`first_critical`).
   At most one per rollout. `kept_success` / `replaced_success` are both arms' success rates.
   tokenmill's earlier variant, `definition = "replace-top1"`: k continuations per arm with
   y_t kept or replaced by the policy's most likely other token; truly critical when
   replacing raises the success rate by ≥ `margin`. `precision_at_k` compares p_CE's
   ranking with the truth, next to entropy and random rankings.

The authors' recipe, as their code runs it (github.com/chenzhiling9954/Critical-Tokens-Matter,
commit 228991e, paths under src/), and where tokenmill differs:

- Data. 64 samples per training question (configs/data_config.py:51-70) at a temperature
  set per model so that a question has about 10 incorrect answers (data_config.py:6-21,
  55-59). Per question (pipeline.py:62-136, selection data_config.py:87-91), answers are
  ranked by how many samples gave them; the positive model gets ONE response of the most
  frequent correct answer (`sft_pos` top-k 1, pipeline.py:97-101), the negative model one
  response per incorrect answer — the first always, later ones only if more than one
  sample gave them — until those answers cover half the incorrect samples (`sft_neg`
  top-p 0.5, pipeline.py:79-80, 102-108). The same responses become the DPO pair that is
  then scored (pipeline.py:95, 109-112): the contrast models score text they were trained
  on. tokenmill: `ContrastTrainConfig.data = "cdpo"` (default) is this selection over the
  run's rollouts of the policy, with "answer" = what the verifier saw (`verify_detail`);
  `data = "all"` trains on every correct / incorrect rollout.
- Training (train/train_sft.py:50-115, configs/train_config.py:27-47): pos and neg alike
  from the base model (pipeline.py:258-265), LoRA r = 8, α = 2r = 16, dropout 0.1 on
  gate_proj/up_proj/down_proj (train_sft.py:52-58, train_config.py:38-39), AdamW lr 3e-4,
  cosine schedule, 100 warm-up steps, 1 epoch, batch 6 (2 × 3 accumulation only for 70B,
  train_sft.py:62-67), bf16, completion-only loss after "Answer:"/"Solution:"
  (train_sft.py:88-94), sequences ≤ 1024 tokens (train_sft.py:103); the adapters are
  merged and the model saved in bfloat16 (train_sft.py:115, utils/utils.py:22-35).
  The last 300 examples are held out and the checkpoint of lowest held-out loss, of those
  saved every 200 steps, is kept (train_sft.py:13, 37-39, 82, `load_best_model_at_end`).
  Models are trained per dataset.
  tokenmill's defaults (`ContrastTrainConfig`, recipe `cdpo`; `CriticalConfig.per_source`)
  are these: held out are the last `val_examples` = 300 of the selected rollouts, at most a
  tenth of them, and one pair of models is trained per policy and source (world or file).
  It differs in float32 training on CPU (bf16 autocast on CUDA), in not truncating
  sequences (they fit the policy's context), and in its own few-line LoRA (peft's layer,
  see tasks/train/finetune.py). `per_source=False` pools a policy's sources into one pair
  (tokenmill's labeller version 2). Recipe `tiny` (`--contrast-recipe tiny`) keeps the settings
  tuned for the bundled 1k-vocabulary models: a full fine-tune, lr 5e-4 constant, 150
  steps of 16 sequences, every rollout, nothing held out, float32 saves.
- p_CE (pipeline.py:189-247): both models in bf16 (utils/sampling.py:15), one forward
  pass over prompt + response, `cd_logits = (1 + 1) * pos_logits - 1 * neg_logits`
  (pipeline.py:228: β = 1, fixed), softmax over the vocabulary, the probability of the
  actual next token (pipeline.py:229-232). On raw logits z rather than log-probs, but
  log p = z − logsumexp(z) differs from z by one constant per row, which the softmax
  removes: tokenmill's formula is the same function (`test_p_ce_on_logits_equals_p_ce_on_log_probs`).
  They compute it on the chosen and the rejected response; only the rejected weights
  1 − p_CE are used (train/train_cdpo.py:132-158 with only_neg = True,
  train_config.py:62), as `include_correct=False` does. The DPO β = 0.1 of
  train_config.py:54 belongs to cDPO's policy training, not to p_CE.
- Saturation. With tokenmill's earlier settings (now recipe `tiny`) p_CE piled up at 0 on
  a real model (35 % of values < 1e-6 on SmolLM2-135M). That is not the formula — the
  authors' is the same — but the contrast models: a full fine-tune at lr 5e-4 over 150 ×
  16 sequences is many epochs over a run's few hundred rollouts, so p_neg learns the very
  incorrect rollouts it then scores (p_neg(y_t) → 1) and p_CE ∝ p_pos(y_t)^(1+β) /
  p_neg(y_t)^β collapses. With the authors' recipe (one epoch of rank-8 adapters, warm-up)
  both models stay near the policy, and p_CE(y_t) stays near the policy's own probability
  of the sampled token (exactly that when p_pos = p_neg), which a sampled token rarely
  has below 1e-6.

Memory. p_CE needs full-vocabulary log-probs of two models for the same tokens. Each
decoder pass covers up to the engine's `token_budget` completion tokens ([tokens, hidden]
states are small); the LM heads then run on row chunks of `p_ce_rows(vocab,
logits_memory_mb)` tokens, so the LIVE_COPIES [tokens, vocab] float32 arrays of a chunk
(log p_pos, log p_neg, one temporary; the contrast is computed in place in log p_pos) fit
`CriticalConfig.logits_memory_mb` (`--logits-memory-mb`, default 512 MiB: 910 tokens at a
49,152-token vocabulary, 294 at 152,064). Results do not depend on the budget.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tokenmill import ids
from tokenmill.capabilities import LOGITS, SCORE
from tokenmill.engines import engine_for
from tokenmill.engines.base import Scored, SamplingParams, first_non_finite, split_rows
from tokenmill.engines.hf import logits_rows
from tokenmill.labelers.critical.config import CriticalConfig, TruthConfig
from tokenmill.errors import TokenmillError
from tokenmill.schema import CRITICAL, CRITICAL_TRUTH
from tokenmill.storage.catalog import only_config, query
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake
from tokenmill.tasks import score as score_stage
from tokenmill.tasks.generate import cached_engine, token_keys
from tokenmill.tasks.prompts import run_prompts
from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard
from tokenmill.storage.artifacts import artifact_path, store_artifact

ARTIFACT_DIR = f"{ARTIFACTS_DIR}/models"
LIVE_COPIES = 3  # [tokens, vocab] float32 arrays alive at once in `contrast_pass`: log p_pos, log p_neg, a temporary
SCORE_TOP_K = 5  # top-k of the pos/neg statistics written to `scores`


class NoContrastData(TokenmillError):
    """A policy lacks correct or incorrect rollouts, so one of its contrast models cannot be trained."""


# ------------------------------------------------------------------ formula


def contrastive_p_ce(logp_pos: torch.Tensor, logp_neg: torch.Tensor, targets: torch.Tensor, beta: float,
                     inplace: bool = False) -> torch.Tensor:
    """p_CE(y_t) = softmax_v((1+β)·log p_pos(v) − β·log p_neg(v))[y_t], rows = tokens.

    One [N, V] array besides the inputs; none with `inplace` (then `logp_pos` is overwritten).
    The log-softmax is written out (s − max − log Σ exp(s − max)) so it runs in place."""
    s = logp_pos.mul_(1 + beta) if inplace else logp_pos * (1 + beta)
    s.sub_(logp_neg, alpha=beta)
    picked = s.gather(-1, targets.long()[:, None])[:, 0]
    top = s.amax(-1)
    s.sub_(top[:, None]).exp_()
    return (picked - top - s.sum(-1).log()).exp()


def logprob_stats(logp: torch.Tensor, targets: torch.Tensor, top_k: int):
    """(chosen log-prob, entropy, top-k ids, top-k log-probs) per row of [N, V] log-probs, with
    one temporary [N, V] array (`engines.base.token_stats` starts from logits and makes more)."""
    chosen = logp.gather(-1, targets.long()[:, None])[:, 0]
    plogp = logp.exp().mul_(logp).nan_to_num_(0.0)  # 0·log 0 = 0
    ent = -plogp.sum(-1)
    del plogp
    top_lp, top_ids = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
    return chosen, ent, top_ids.int(), top_lp


def p_ce_rows(vocab: int, memory_mb: float) -> int:
    """Tokens per LM-head chunk of `contrast_pass`: its LIVE_COPIES float32 [tokens, vocab]
    arrays fit `memory_mb` MiB."""
    return logits_rows(vocab, memory_mb, copies=LIVE_COPIES)


def contrast_pass(pos, neg, prompts, completions, beta: float, memory_mb: float) -> tuple[np.ndarray, dict]:
    """(p_CE of every completion token, flat [N] float32; {"pos": [Scored], "neg": [Scored]})
    for rollouts given as token ids, under the contrast models' HF engines `pos` and `neg`.

    One decoder pass per model per batch of rollouts (≤ the engine's `token_budget`
    completion tokens, at least one rollout), then both LM heads on chunks of
    `p_ce_rows(vocab, memory_mb)` tokens; a rollout may span chunks."""
    heads = [e.model.get_output_embeddings().weight.shape[0] for e in (pos, neg)]
    if heads[0] != heads[1]:
        raise TokenmillError(f"critical: the pos and neg models have different vocabularies ({heads[0]} vs {heads[1]})",
                             fix="train both contrast models from the same policy")
    rows = p_ce_rows(heads[0], memory_mb)
    lengths = np.array([len(c) for c in completions], dtype=np.int64)
    p_ce, stats = [], {"pos": [], "neg": []}
    for batch in _token_batches(lengths, pos.token_budget):
        p_ids, c_ids = [prompts[i] for i in batch], [completions[i] for i in batch]
        h_pos, targets, lens = pos.completion_states(p_ids, c_ids)
        h_neg, _, _ = neg.completion_states(p_ids, c_ids)
        parts: dict[str, list] = {"pos": [], "neg": []}
        with torch.inference_mode():
            for i in range(0, max(len(targets), 1), rows):  # one chunk even when the batch has no tokens
                t = targets[i : i + rows]
                lp = pos.head_logprobs(h_pos[i : i + rows])
                parts["pos"].append(logprob_stats(lp, t, SCORE_TOP_K))
                lq = neg.head_logprobs(h_neg[i : i + rows]).to(lp.device)
                parts["neg"].append(logprob_stats(lq, t, SCORE_TOP_K))
                p_ce.append(contrastive_p_ce(lp, lq, t, beta, inplace=True).float().cpu().numpy())
                del lp, lq
        for role in ("pos", "neg"):
            cols = [split_rows(torch.cat([part[k] for part in parts[role]]).cpu().numpy(), lens) for k in range(4)]
            stats[role] += [Scored(*row) for row in zip(*cols)]
    return (np.concatenate(p_ce) if p_ce else np.zeros(0, np.float32)), stats


def rank_in_rollout(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """1-based rank of each token's value within its rollout, ascending (ties: lower pos first)."""
    seq = np.repeat(np.arange(len(lengths)), lengths)
    order = np.lexsort((np.arange(len(values)), values, seq))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(len(values)) - starts  # `order` keeps rollouts in sequence
    return ranks + 1


# ------------------------------------------------------------------ contrast models


def select_training_rollouts(rows: pa.Table, verdict: str, data: str = "cdpo", seed: int = 0) -> pa.Table:
    """The rollouts (with `prompt_id`, `verify_detail`, `verdict`, `rollout_id`) a contrast
    model learns from. `all`: every rollout with `verdict`. `cdpo`, the authors' selection
    (pipeline.py:62-136): per prompt, answers = rollouts grouped by what the verifier saw,
    most frequent first (ties in a seeded random order); correct: one rollout of the most
    frequent answer; incorrect: one rollout per answer — the first always, later ones only
    if more than one rollout gave them — until the answers taken cover ⌈½⌉ of the prompt's
    incorrect rollouts. Rows come back in their table order."""
    rows = rows.filter(pc.field("verdict") == verdict)
    if data == "all" or rows.num_rows == 0:
        return rows
    rng = random.Random(seed)
    by_prompt: dict[str, list] = defaultdict(list)
    for i, (pid, rid, detail) in enumerate(zip(*(rows.column(c).to_pylist() for c in
                                                 ("prompt_id", "rollout_id", "verify_detail")))):
        by_prompt[pid].append((rid, detail or "", i))
    keep = []
    for pid in sorted(by_prompt):
        items = sorted(by_prompt[pid])
        rng.shuffle(items)  # as the authors shuffle a question's responses before grouping them
        groups: dict[str, list] = {}
        for item in items:
            groups.setdefault(item[1], []).append(item)
        ranked = sorted(groups.values(), key=len, reverse=True)  # stable: ties keep first-seen order
        if verdict == "correct":
            keep.append(rng.choice(ranked[0])[2])
            continue
        need = total = math.ceil(0.5 * len(items))
        for group in ranked:
            if need > 0 and (need == total or len(group) > 1):
                keep.append(rng.choice(group)[2])
                need -= len(group)
    return rows.take(sorted(keep))


def _train_settings(cfg: CriticalConfig) -> dict:
    return {**cfg.train.model_dump(), "seed": cfg.seed}


def artifact_id(role: str, policy: str, rollout_ids: list[str], cfg: CriticalConfig) -> str:
    return ids.content_id("cdpo", role, policy, ids.canonical_json(_train_settings(cfg)), *sorted(rollout_ids))


def train_contrast_models(lake: Lake, run_id: str, policy: str, cfg: CriticalConfig,
                          source: str | None = None) -> dict[str, str]:
    """{"pos": local path, "neg": local path}: fine-tuned from `policy` on its correct /
    incorrect rollouts of the run (of `source` only, when given; `select_training_rollouts`).
    An artifact already in the lake is reused, not retrained."""
    where = pc.field("model") == policy
    if source is not None:
        where = where & (pc.field("source") == source)
    rollouts = lake.read("rollouts", run_id, columns=["rollout_id", "prompt_id", "prompt_token_ids",
                                                      "completion_token_ids", "verdict", "verify_detail"], filter=where)
    of = f"policy {policy!r}" + (f" on source {source!r}" if source is not None else "")
    out = {}
    for role, verdict in (("pos", "correct"), ("neg", "incorrect")):
        rows = select_training_rollouts(rollouts, verdict, cfg.train.data, cfg.seed)
        if rows.num_rows == 0:
            raise NoContrastData(f"critical: {of} has no {verdict} rollouts in run {run_id!r} to train its {role} model",
                                 fix="sample more rollouts (more prompts or samples per prompt)")
        aid = artifact_id(role, policy, rows.column("rollout_id").to_pylist(), cfg)
        rel = f"{ARTIFACT_DIR}/{aid}"
        if not lake.has_dir(rel):
            _train_and_store(lake, run_id, role, policy, rows, aid, rel, cfg, source)
        out[role] = artifact_path(lake, rel)
    return out


def _train_and_store(lake, run_id, role, policy, rows, aid, rel, cfg: CriticalConfig, source: str | None) -> None:
    from tokenmill.tasks.train.finetune import finetune, save_model

    prompts = rows.column("prompt_token_ids").to_pylist()
    completions = rows.column("completion_token_ids").to_pylist()
    name = policy.rstrip("/").rsplit("/", 1)[-1] + (f", {source}" if source is not None else "")
    history: dict = {}
    model, tok, losses = finetune(policy, prompts, completions, cfg.train, cfg.seed, stage=f"train {role} model ({name})",
                                  history=history)

    def save(tmp: str) -> None:
        save_model(model, tok, tmp, cfg.train.save_dtype)

    lineage = {"method": "cdpo-contrast", "policy": policy, "run_id": run_id, "verdict": "correct" if role == "pos" else "incorrect",
               "source": source, "rollout_ids_hash": ids.content_id(*sorted(rows.column("rollout_id").to_pylist())),
               "train": _train_settings(cfg), "held_out": history}
    store_artifact(lake, run_id, rel, save, artifact_id=aid, role=role, base_model=policy, train_rollouts=rows.num_rows,
                   train_tokens=int(pc.sum(pc.list_value_length(rows.column("completion_token_ids"))).as_py()),
                   steps=len(losses), final_loss=float(np.mean(losses[-10:])), lineage=lineage)


# ------------------------------------------------------------------ labeler


class CriticalLabeler(Labeler):
    name = "critical"
    version = "3"  # 2: contrast models by the authors' recipe (LoRA, their data selection, bf16 saves); 3: per source, held-out best step

    def __init__(self, config: CriticalConfig | None = None, engine: str = "hf", engine_options: dict | None = None):
        self.cfg = config or CriticalConfig()
        # p_CE needs the contrast models' full logits: the run's engine where it gives them
        self.engine = engine_for({LOGITS, SCORE}, engine, engine_options)
        # (policy, source — None when pooled) → {"pos": path, "neg": path}
        self.models: dict[tuple[str, str | None], dict[str, str]] = {}

    def _key(self, policy: str, source: str | None) -> tuple[str, str | None]:
        return (policy, source if self.cfg.per_source else None)

    def prepare(self, lake: Lake, run_id: str) -> dict:
        """Train (or find) the pos/neg models of every policy (and source) with incorrect rollouts."""
        rollouts = lake.read("rollouts", run_id, columns=["model", "source", "verdict"])
        bad = rollouts.filter(pc.field("verdict") == "incorrect")
        keys = sorted({self._key(m, s) for m, s in zip(bad.column("model").to_pylist(), bad.column("source").to_pylist())},
                      key=lambda k: (k[0], k[1] or ""))
        self.models = {}
        for key in keys:
            try:
                self.models[key] = train_contrast_models(lake, run_id, key[0], self.cfg, key[1])
            except NoContrastData as e:  # e.g. a policy that got nothing right: no pos model, no labels
                logging.getLogger(__name__).warning("critical: skipping %s: %s", key, e)
        return self.models

    def params(self) -> dict:
        return self.cfg.model_dump(include={"beta", "top_k", "threshold", "include_correct"})

    def _models_of(self, key: tuple[str, str | None]) -> dict:
        # the contrast models as labels record them: their place in the lake, not where this
        # machine keeps its copy, so one labelling has one config id on every machine and
        # wherever the lake lives (re-runs elsewhere dedupe instead of labelling again)
        local = self.models[key]
        return {"policy": key[0], **{r: f"{ARTIFACT_DIR}/{local[r].rstrip('/').rsplit('/', 1)[-1]}" for r in ("pos", "neg")}}

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        if not self.models:
            self.prepare(lake, run_id)
        rollouts = read_rollouts_shard(lake, shard, score_stage.SCORE_COLUMNS + ["verdict", "source"])
        keep = ["incorrect", "correct"] if self.cfg.include_correct else ["incorrect"]
        rollouts = rollouts.filter(pc.is_in(rollouts.column("verdict"), value_set=pa.array(keep)))
        written = {"critical": 0}
        keys = [self._key(m, s) for m, s in zip(rollouts.column("model").to_pylist(), rollouts.column("source").to_pylist())]
        for key in sorted(set(keys), key=lambda k: (k[0], k[1] or "")):
            if key not in self.models:
                continue
            cid = config_id(self.name, self.version, self._models_of(key), self.params())
            if is_done(lake, run_id, cid, shard):
                continue
            rows = rollouts.filter(pa.array([k == key for k in keys]))
            table, scores = self.label(rows, key)
            for s in scores:
                lake.commit("scores", run_id, s)
            written["critical"] += lake.commit("critical", run_id, table).rows_written
            mark_done(lake, run_id, cid, shard)
        return written

    def label(self, rollouts: pa.Table, key: tuple[str, str | None]) -> tuple[pa.Table, list[pa.Table]]:
        """(critical rows, [pos scores, neg scores]) of the given rollouts of `key` (policy, source)."""
        models = self._models_of(key)
        kind, opts = self.engine
        pos, neg = (cached_engine(kind, self.models[key][r], **opts) for r in ("pos", "neg"))  # the local copies
        rids = rollouts.column("rollout_id").to_pylist()
        prompts = rollouts.column("prompt_token_ids").to_pylist()
        completions = [np.asarray(c, np.int32) for c in rollouts.column("completion_token_ids").to_pylist()]
        lengths = np.array([len(c) for c in completions], dtype=np.int64)
        p, stats = contrast_pass(pos, neg, prompts, completions, self.cfg.beta, self.cfg.logits_memory_mb)
        bad = first_non_finite(lengths, p)
        if bad:  # e.g. a contrast model whose fine-tuning diverged
            raise TokenmillError(f"critical: p_CE is NaN/inf on {bad[2]} of {len(p)} tokens, first at token {bad[1]} "
                                 f"(contrast models {models['pos']}, {models['neg']})", where=f"rollout {rids[bad[0]]}",
                                 fix="the contrast models give non-finite log-probabilities: check the policy's "
                                     "weights, or train them with a lower train_lr (--train-lr) / fewer --train-steps")
        rank = rank_in_rollout(p, lengths)
        crit = (rank <= self.cfg.top_k) if self.cfg.top_k else np.zeros(len(p), bool)
        if self.cfg.threshold is not None:
            crit = crit | (p < self.cfg.threshold) if self.cfg.top_k else p < self.cfg.threshold
        n = len(p)
        table = pa.table({
            **token_keys(rids, lengths),
            "token_id": pa.array(np.concatenate(completions) if n else np.zeros(0, np.int32), pa.int32()),
            "p_ce": pa.array(p, pa.float32()),
            "weight": pa.array(1 - p, pa.float32()),
            "rank": pa.array(rank, pa.int32()),
            "is_critical": pa.array(crit, pa.bool_()),
            "pos_model": pa.array(np.full(n, models["pos"], dtype=object), pa.string()),
            "neg_model": pa.array(np.full(n, models["neg"], dtype=object), pa.string()),
            "beta": pa.array(np.full(n, self.cfg.beta), pa.float32()),
            **provenance(n, self.name, self.version, models, self.params()),
        }, schema=CRITICAL.schema)
        scores = [score_stage.scores_table(rids, completions, stats[r], r, models[r]) for r in ("pos", "neg")]
        return table, scores


def _token_batches(lengths: np.ndarray, budget: int) -> list[list[int]]:
    """Consecutive rollout indices cut so each batch holds at most `budget` tokens (≥ 1 rollout)."""
    batches, cur, total = [], [], 0
    for i, n in enumerate(lengths.tolist()):  # per rollout, not per token
        if cur and total + n > budget:
            batches.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += n
    return batches + ([cur] if cur else [])


# ------------------------------------------------------------------ ground truth


def first_critical(kept_correct: np.ndarray, recover: int = 3) -> int:
    """The paper's critical token of one incorrect rollout, as the authors' `analyse_all_token`
    scans its prefixes (rollout_sampling_for_critical_tokens.py): in order, the first position
    whose kept continuations (y_≤t, then sampled) are all wrong becomes the candidate; a later
    position with more than `recover` correct continuations means the trajectory recovered, so
    the candidate is set aside and the scan looks for a new one. Returns the open candidate,
    else the last set-aside one, else −1 (none). `kept_correct`: correct kept continuations
    per position."""
    found, last = -1, -1
    for t, c in enumerate(np.asarray(kept_correct)):  # a scan with state over one rollout, off the hot path
        if c == 0 and found < 0:
            found = t
        if found >= 0 and c > recover:
            last, found = found, -1
    return found if found >= 0 else last


def critical_truth(lake: Lake, run_id: str, policy: str, cfg: TruthConfig | None = None) -> int:
    """Ground truth at every position of up to `cfg.rollouts` incorrect rollouts of `policy`
    (module docstring, 3.); commit table `critical_truth`. Returns rows written."""
    cfg = cfg or TruthConfig()
    picked = query(lake, """
        SELECT r.rollout_id, r.prompt_id, r.prompt_token_ids, r.completion_token_ids, r.finish_reason,
               list(t.topk_ids ORDER BY t.pos) AS topk
        FROM rollouts r JOIN tokens t USING (rollout_id, run_id)
        WHERE r.run_id = ? AND r.model = ? AND r.verdict = 'incorrect'
        GROUP BY r.rollout_id, r.prompt_id, r.prompt_token_ids, r.completion_token_ids, r.finish_reason
        ORDER BY hash(r.rollout_id || ?::VARCHAR) LIMIT ?""", [run_id, policy, cfg.seed, cfg.rollouts])
    if picked.num_rows == 0:
        return 0
    prompts = run_prompts(lake, run_id, picked.column("prompt_id"))
    engine = cached_engine("hf", policy)
    rows = picked.to_pylist()
    # EOS is not a choice worth replacing: positions up to the last token before it
    lasts = [len(r["completion_token_ids"]) - (1 if r["finish_reason"] == "stop" else 0) for r in rows]
    if cfg.definition == "paper":
        jobs, alts, kept, replaced, critical = _paper_truth(engine, rows, lasts, prompts, cfg)
    else:
        jobs, alts, kept, replaced, critical = _replace_top1_truth(engine, rows, lasts, prompts, cfg)
    if not jobs:
        return 0
    n = len(jobs)
    models, params_json = {"policy": policy}, cfg.model_dump()
    table = pa.table({
        "rollout_id": [rows[i]["rollout_id"] for i, _ in jobs],
        "pos": pa.array([t for _, t in jobs], pa.int32()),
        "token_id": pa.array([rows[i]["completion_token_ids"][t] for i, t in jobs], pa.int32()),
        "alt_token_id": pa.array(alts, pa.int32()),
        "k": pa.array(np.full(n, cfg.k), pa.int32()),
        "kept_success": pa.array(kept, pa.float32()),
        "replaced_success": pa.array(replaced, pa.float32()),
        "is_critical": pa.array(critical, pa.bool_()),
        **provenance(n, "critical_truth", TRUTH_VERSION, models, params_json),
    }, schema=CRITICAL_TRUTH.schema)
    return lake.commit("critical_truth", run_id, table).rows_written


TRUTH_VERSION = "2"  # 2: the paper's definition by default (1: replace-top1 only)


def _success(engine, prompts, rows, jobs_of_start, starts, params) -> np.ndarray:
    """Per start, the share of its `params.n` continuations the verifier calls correct (the
    verifier reads the whole completion: the rollout's prefix, kept or replaced, + the continuation)."""
    from tokenmill.tasks.verify import verify_one

    gens = engine.generate(starts, params)
    rows_of = [rows[jobs_of_start[g.prompt_index]] for g in gens]
    texts = engine.tokenizer.batch_decode([starts[g.prompt_index][len(r["prompt_token_ids"]):] + g.token_ids.tolist()
                                           for g, r in zip(gens, rows_of)], skip_special_tokens=True)
    ok = np.array([verify_one(prompts[r["prompt_id"]], text)[1].verdict == "correct" for r, text in zip(rows_of, texts)],
                  dtype=np.float64)
    idx = np.array([g.prompt_index for g in gens], dtype=np.int64)
    return np.bincount(idx, ok, minlength=len(starts)) / np.maximum(np.bincount(idx, minlength=len(starts)), 1)


def _paper_truth(engine, rows, lasts, prompts, cfg: TruthConfig):
    """The authors' rollout sampling: k continuations of every kept prefix y_≤t, and
    `alternatives` tokens drawn from π(· | y_<t) without y_t, each continued once."""
    jobs = [(i, t) for i, last in enumerate(lasts) for t in range(last)]
    if not jobs:
        return [], [], [], [], []
    gen = torch.Generator().manual_seed(cfg.seed)
    drawn = []
    model = engine.model
    with torch.no_grad():
        for r, last in zip(rows, lasts):  # one forward per rollout: memory bounded by its length × vocabulary
            if not last:
                continue
            p_len = len(r["prompt_token_ids"])
            ids = torch.tensor([r["prompt_token_ids"] + r["completion_token_ids"]], device=engine.device)
            logits = model(input_ids=ids).logits[0, p_len - 1: p_len - 1 + last].float()
            probs = logits.softmax(-1).cpu()
            probs[torch.arange(last), torch.tensor(r["completion_token_ids"][:last])] = 0.0  # the authors zero y_t
            drawn.append(torch.multinomial(probs, cfg.alternatives, replacement=True, generator=gen))
    drawn = torch.cat(drawn).tolist()  # [jobs, alternatives]
    job_rows = [i for i, _ in jobs]
    kept_starts = [rows[i]["prompt_token_ids"] + rows[i]["completion_token_ids"][: t + 1] for i, t in jobs]
    kept = _success(engine, prompts, rows, job_rows, kept_starts,
                    SamplingParams(n=cfg.k, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed, logprobs=0))
    repl_starts = [rows[i]["prompt_token_ids"] + rows[i]["completion_token_ids"][:t] + [a]
                   for (i, t), alts in zip(jobs, drawn) for a in alts]
    repl_rows = np.repeat(job_rows, cfg.alternatives).tolist()
    replaced = _success(engine, prompts, rows, repl_rows, repl_starts,
                        SamplingParams(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed + 1,
                                       logprobs=0)).reshape(len(jobs), cfg.alternatives).mean(-1)
    critical = np.zeros(len(jobs), dtype=bool)
    offsets = np.cumsum([0, *lasts])
    correct = np.rint(kept * cfg.k)
    for i in range(len(rows)):
        t = first_critical(correct[offsets[i]: offsets[i + 1]], cfg.recover)
        if t >= 0:
            critical[offsets[i] + t] = True
    return jobs, [None] * len(jobs), kept, replaced, critical


def _replace_top1_truth(engine, rows, lasts, prompts, cfg: TruthConfig):
    """tokenmill's earlier variant: k continuations with y_t kept and k with it replaced by
    the policy's most likely other token; critical when replacing raises success by ≥ margin."""
    jobs, alts = [], []
    for i, (r, last) in enumerate(zip(rows, lasts)):
        comp = r["completion_token_ids"]
        for t in range(last):
            alt = next((v for v in r["topk"][t] if v != comp[t]), None)
            if alt is not None:
                jobs.append((i, t))
                alts.append(alt)
    if not jobs:
        return [], [], [], [], []
    job_rows = [i for i, _ in jobs]
    params = SamplingParams(n=cfg.k, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed, logprobs=0)
    kept = [rows[i]["prompt_token_ids"] + rows[i]["completion_token_ids"][: t + 1] for i, t in jobs]
    repl = [rows[i]["prompt_token_ids"] + rows[i]["completion_token_ids"][:t] + [a] for (i, t), a in zip(jobs, alts)]
    rate = _success(engine, prompts, rows, job_rows + job_rows, kept + repl, params).reshape(2, len(jobs))
    return jobs, alts, rate[0], rate[1], rate[1] - rate[0] >= cfg.margin


PRECISION_SQL = """
WITH truth AS (SELECT rollout_id, pos, is_critical FROM critical_truth WHERE run_id = $run AND config_id = $truth),
c AS (SELECT rollout_id, pos, p_ce FROM critical WHERE run_id = $run AND ($cfg IS NULL OR config_id = $cfg)),
j AS (SELECT t.rollout_id, t.is_critical::INT AS y, c.p_ce, k.entropy
      FROM truth t JOIN c USING (rollout_id, pos) JOIN tokens k ON k.run_id = $run AND k.rollout_id = t.rollout_id AND k.pos = t.pos),
ranked AS (SELECT *, row_number() OVER (PARTITION BY rollout_id ORDER BY p_ce ASC) AS r_ce,
                  row_number() OVER (PARTITION BY rollout_id ORDER BY entropy DESC) AS r_ent,
                  avg(y) OVER (PARTITION BY rollout_id) AS base, count(*) OVER (PARTITION BY rollout_id) AS n FROM j),
per AS (SELECT rollout_id, max(y) AS has, max(y) FILTER (WHERE r_ce <= $k) AS hit_ce,
               max(y) FILTER (WHERE r_ent <= $k) AS hit_ent, least($k, any_value(n)) / any_value(n) AS hit_random
        FROM ranked GROUP BY rollout_id)
SELECT (SELECT count(*) FROM per) AS rollouts, count(*) AS positions, round(avg(y), 3) AS truth_rate,
       (SELECT sum(has) FROM per) AS with_critical,
       round(avg(y) FILTER (WHERE r_ce <= $k), 3) AS p_ce_at_k,
       round(avg(y) FILTER (WHERE r_ent <= $k), 3) AS entropy_at_k,
       round(avg(base) FILTER (WHERE r_ce <= $k), 3) AS random_at_k,
       (SELECT round(avg(hit_ce) FILTER (WHERE has = 1), 3) FROM per) AS p_ce_hit_at_k,
       (SELECT round(avg(hit_ent) FILTER (WHERE has = 1), 3) FROM per) AS entropy_hit_at_k,
       (SELECT round(avg(hit_random) FILTER (WHERE has = 1), 3) FROM per) AS random_hit_at_k
FROM ranked
"""


def precision_at_k(lake: Lake, run_id: str, k: int = 3, config: str | None = None, truth: str | None = None) -> pa.Table:
    """Against `critical_truth` (config `truth`: the run's only one unless named), the
    precision@k of the k lowest-p_CE tokens of each rollout, with the k highest-entropy
    tokens and a random pick (its expectation: each rollout's share of truly critical
    positions) as baselines; and hit@k, the share of rollouts with a critical token that
    have it among those k (random: k / length)."""
    truth = truth or only_config(lake, "critical_truth", run_id, "precision@k",
                                 fix="name the truth config (critical_truth.config_id) to score against")
    return query(lake, PRECISION_SQL, {"run": run_id, "k": k, "cfg": config, "truth": truth})
