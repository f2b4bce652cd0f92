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
3. Ground truth as the paper defines it (`critical_truth`): for positions of incorrect
   rollouts, continue k times from y_≤t (token kept) and k times from y_<t + v' (v' the
   policy's most likely other token), verify every continuation, and record both success
   rates; a token is truly critical when replacing it raises the success rate by at least
   `margin`. `precision_at_k` compares p_CE's ranking with this truth, next to entropy
   and random rankings.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tokenmill import ids
from tokenmill.engines.base import Scored, SamplingParams, first_non_finite, split_rows, token_stats
from tokenmill.config import CriticalConfig, TruthConfig
from tokenmill.errors import TokenmillError
from tokenmill.schema import CRITICAL, CRITICAL_TRUTH
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import ARTIFACTS_DIR, Lake
from tokenmill.tasks import score as score_stage
from tokenmill.tasks.generate import cached_engine, token_keys
from tokenmill.tasks.labels.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard
from tokenmill.tasks.train.artifacts import artifact_path, store_artifact

ARTIFACT_DIR = f"{ARTIFACTS_DIR}/models"


class NoContrastData(TokenmillError):
    """A policy lacks correct or incorrect rollouts, so one of its contrast models cannot be trained."""
TOKENS_PER_BATCH = 4096  # completion tokens per full-vocabulary pass: bounds [tokens, vocab] memory


# ------------------------------------------------------------------ formula


def contrastive_p_ce(logp_pos: torch.Tensor, logp_neg: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """p_CE(y_t) = softmax_v((1+β)·log p_pos(v) − β·log p_neg(v))[y_t], rows = tokens."""
    s = (1 + beta) * logp_pos - beta * logp_neg
    return torch.log_softmax(s, dim=-1).gather(-1, targets.long()[:, None])[:, 0].exp()


def rank_in_rollout(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """1-based rank of each token's value within its rollout, ascending (ties: lower pos first)."""
    seq = np.repeat(np.arange(len(lengths)), lengths)
    order = np.lexsort((np.arange(len(values)), values, seq))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(len(values)) - starts  # `order` keeps rollouts in sequence
    return ranks + 1


# ------------------------------------------------------------------ contrast models


def artifact_id(role: str, policy: str, rollout_ids: list[str], cfg: CriticalConfig) -> str:
    return ids.content_id("cdpo", role, policy, cfg.model_dump_json(include={"train_steps", "train_lr", "train_batch", "seed"}),
                          *sorted(rollout_ids))


def train_contrast_models(lake: Lake, run_id: str, policy: str, cfg: CriticalConfig) -> dict[str, str]:
    """{"pos": local path, "neg": local path}: fine-tuned from `policy` on its correct /
    incorrect rollouts of the run. An artifact already in the lake is reused, not retrained."""
    rollouts = lake.read("rollouts", run_id, columns=["rollout_id", "prompt_token_ids", "completion_token_ids", "verdict"],
                         filter=pc.field("model") == policy)
    out = {}
    for role, verdict in (("pos", "correct"), ("neg", "incorrect")):
        rows = rollouts.filter(pc.field("verdict") == verdict)
        if rows.num_rows == 0:
            raise NoContrastData(f"critical: policy {policy!r} has no {verdict} rollouts in run {run_id!r} to train "
                                 f"its {role} model", fix="sample more rollouts (more prompts or samples per prompt)")
        aid = artifact_id(role, policy, rows.column("rollout_id").to_pylist(), cfg)
        rel = f"{ARTIFACT_DIR}/{aid}"
        if not lake.has_dir(rel):
            _train_and_store(lake, run_id, role, policy, rows, aid, rel, cfg)
        out[role] = artifact_path(lake, rel)
    return out


def _train_and_store(lake, run_id, role, policy, rows, aid, rel, cfg: CriticalConfig) -> None:
    from tokenmill.tasks.train.finetune import finetune

    prompts = rows.column("prompt_token_ids").to_pylist()
    completions = rows.column("completion_token_ids").to_pylist()
    model, tok, losses = finetune(policy, prompts, completions, cfg.train_steps, cfg.train_lr, cfg.train_batch, cfg.seed)

    def save(tmp: str) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    lineage = {"method": "cdpo-contrast", "policy": policy, "run_id": run_id, "verdict": "correct" if role == "pos" else "incorrect",
               "rollout_ids_hash": ids.content_id(*sorted(rows.column("rollout_id").to_pylist())),
               "train": cfg.model_dump(include={"train_steps", "train_lr", "train_batch", "seed"})}
    store_artifact(lake, run_id, rel, save, artifact_id=aid, role=role, base_model=policy, train_rollouts=rows.num_rows,
                   train_tokens=int(pc.sum(pc.list_value_length(rows.column("completion_token_ids"))).as_py()),
                   steps=cfg.train_steps, final_loss=float(np.mean(losses[-10:])), lineage=lineage)


# ------------------------------------------------------------------ labeler


class CriticalLabeler(Labeler):
    name = "critical"
    version = "1"

    def __init__(self, config: CriticalConfig | None = None):
        self.cfg = config or CriticalConfig()
        self.models: dict[str, dict[str, str]] = {}  # policy → {"pos": path, "neg": path}

    def prepare(self, lake: Lake, run_id: str) -> dict:
        """Train (or find) the pos/neg models of every policy with incorrect rollouts."""
        rollouts = lake.read("rollouts", run_id, columns=["model", "verdict"])
        policies = sorted(set(rollouts.filter(pc.field("verdict") == "incorrect").column("model").to_pylist()))
        self.models = {}
        for p in policies:
            try:
                self.models[p] = train_contrast_models(lake, run_id, p, self.cfg)
            except NoContrastData as e:  # e.g. a policy that got nothing right: no pos model, no labels
                logging.getLogger(__name__).warning("critical: skipping %s: %s", p, e)
        return self.models

    def params(self) -> dict:
        return self.cfg.model_dump(include={"beta", "top_k", "threshold", "include_correct"})

    def _models_of(self, policy: str) -> dict:
        # the contrast models as labels record them: their place in the lake, not where this
        # machine keeps its copy, so one labelling has one config id on every machine and
        # wherever the lake lives (re-runs elsewhere dedupe instead of labelling again)
        local = self.models[policy]
        return {"policy": policy, **{r: f"{ARTIFACT_DIR}/{local[r].rstrip('/').rsplit('/', 1)[-1]}" for r in ("pos", "neg")}}

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        if not self.models:
            self.prepare(lake, run_id)
        rollouts = read_rollouts_shard(lake, shard, score_stage.SCORE_COLUMNS + ["verdict"])
        keep = ["incorrect", "correct"] if self.cfg.include_correct else ["incorrect"]
        rollouts = rollouts.filter(pc.is_in(rollouts.column("verdict"), value_set=pa.array(keep)))
        written = {"critical": 0}
        for policy in pc.unique(rollouts.column("model")).to_pylist():
            if policy not in self.models:
                continue
            cid = config_id(self.name, self.version, self._models_of(policy), self.params())
            if is_done(lake, run_id, cid, shard):
                continue
            rows = rollouts.filter(pc.field("model") == policy)
            table, scores = self.label(rows, policy)
            for s in scores:
                lake.commit("scores", run_id, s)
            written["critical"] += lake.commit("critical", run_id, table).rows_written
            mark_done(lake, run_id, cid, shard)
        return written

    def label(self, rollouts: pa.Table, policy: str) -> tuple[pa.Table, list[pa.Table]]:
        """(critical rows, [pos scores, neg scores]) of the given rollouts of `policy`."""
        models = self._models_of(policy)
        pos, neg = (cached_engine("hf", self.models[policy][r]) for r in ("pos", "neg"))  # the local copies
        rids = rollouts.column("rollout_id").to_pylist()
        prompts = rollouts.column("prompt_token_ids").to_pylist()
        completions = [np.asarray(c, np.int32) for c in rollouts.column("completion_token_ids").to_pylist()]
        lengths = np.array([len(c) for c in completions], dtype=np.int64)
        p_ce, stats = [], {"pos": [], "neg": []}
        for batch in _token_batches(lengths, TOKENS_PER_BATCH):
            p_ids, c_ids = [prompts[i] for i in batch], [completions[i] for i in batch]
            lp_pos, targets, lens = pos.full_logprobs(p_ids, c_ids)
            lp_neg, _, _ = neg.full_logprobs(p_ids, c_ids)
            p_ce.append(contrastive_p_ce(lp_pos, lp_neg, targets, self.cfg.beta).numpy())
            for role, lp in (("pos", lp_pos), ("neg", lp_neg)):
                chosen, ent, top_ids, top_lp = (t.numpy() for t in token_stats(lp, targets, 5))
                cols = [split_rows(a, lens) for a in (chosen, ent, top_ids, top_lp)]
                stats[role] += [Scored(*row) for row in zip(*cols)]
        p = np.concatenate(p_ce) if p_ce else np.zeros(0, np.float32)
        bad = first_non_finite(lengths, p)
        if bad:  # e.g. a contrast model whose fine-tuning diverged
            raise TokenmillError(f"critical: p_CE is NaN/inf on {bad[2]} of {len(p)} tokens, first at token {bad[1]} "
                                 f"(contrast models {models['pos']}, {models['neg']})", where=f"rollout {rids[bad[0]]}",
                                 fix="the contrast models give non-finite log-probabilities: check the policy's "
                                     "weights, or train them with a lower train_lr / fewer --train-steps")
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


def critical_truth(lake: Lake, run_id: str, policy: str, cfg: TruthConfig | None = None) -> int:
    """Roll out kept/replaced continuations at every position of up to `cfg.rollouts`
    incorrect rollouts of `policy`; commit table `critical_truth`. Returns rows written."""
    from tokenmill.sources.base import prompts_from_table
    from tokenmill.tasks.verify import verify_one

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
    prompts = {p.prompt_id: p for p in prompts_from_table(lake.read("prompts", run_id))}
    engine = cached_engine("hf", policy)
    tok = engine.tokenizer
    jobs = []  # (rollout row, pos, token, alternative)
    for row in picked.to_pylist():
        comp = row["completion_token_ids"]
        last = len(comp) - (1 if row["finish_reason"] == "stop" else 0)  # EOS is not a choice worth replacing
        for t in range(last):
            alt = next((v for v in row["topk"][t] if v != comp[t]), None)
            if alt is not None:
                jobs.append((row, t, comp[t], alt))
    if not jobs:
        return 0
    params = SamplingParams(n=cfg.k, temperature=1.0, max_tokens=cfg.max_tokens, seed=cfg.seed, logprobs=0)
    kept = [r["prompt_token_ids"] + r["completion_token_ids"][: t + 1] for r, t, _, _ in jobs]
    repl = [r["prompt_token_ids"] + r["completion_token_ids"][:t] + [alt] for r, t, _, alt in jobs]
    starts = kept + repl
    gens = engine.generate(starts, params)
    job_of = [jobs[g.prompt_index % len(jobs)] for g in gens]
    # the verifier reads the whole completion: the rollout's prefix (kept or replaced) + the continuation
    texts = tok.batch_decode([starts[g.prompt_index][len(job[0]["prompt_token_ids"]):] + g.token_ids.tolist()
                              for g, job in zip(gens, job_of)], skip_special_tokens=True)
    ok = np.array([verify_one(prompts[job[0]["prompt_id"]], text)[1].verdict == "correct"
                   for job, text in zip(job_of, texts)], dtype=np.float32)
    rate = ok.reshape(2, len(jobs), cfg.k).mean(-1)  # generate returns prompt order, then sample order
    n = len(jobs)
    models, params_json = {"policy": policy}, cfg.model_dump()
    table = pa.table({
        "rollout_id": [r["rollout_id"] for r, *_ in jobs],
        "pos": pa.array([t for _, t, _, _ in jobs], pa.int32()),
        "token_id": pa.array([v for _, _, v, _ in jobs], pa.int32()),
        "alt_token_id": pa.array([a for *_, a in jobs], pa.int32()),
        "k": pa.array(np.full(n, cfg.k), pa.int32()),
        "kept_success": pa.array(rate[0], pa.float32()),
        "replaced_success": pa.array(rate[1], pa.float32()),
        "is_critical": pa.array(rate[1] - rate[0] >= cfg.margin, pa.bool_()),
        **provenance(n, "critical_truth", "1", models, params_json),
    }, schema=CRITICAL_TRUTH.schema)
    return lake.commit("critical_truth", run_id, table).rows_written


PRECISION_SQL = """
WITH truth AS (SELECT rollout_id, pos, is_critical FROM critical_truth WHERE run_id = $run),
c AS (SELECT rollout_id, pos, p_ce FROM critical WHERE run_id = $run AND ($cfg IS NULL OR config_id = $cfg)),
j AS (SELECT t.rollout_id, t.is_critical::INT AS y, c.p_ce, k.entropy
      FROM truth t JOIN c USING (rollout_id, pos) JOIN tokens k ON k.run_id = $run AND k.rollout_id = t.rollout_id AND k.pos = t.pos),
ranked AS (SELECT *, row_number() OVER (PARTITION BY rollout_id ORDER BY p_ce ASC) AS r_ce,
                  row_number() OVER (PARTITION BY rollout_id ORDER BY entropy DESC) AS r_ent,
                  avg(y) OVER (PARTITION BY rollout_id) AS base FROM j)
SELECT count(DISTINCT rollout_id) AS rollouts, count(*) AS positions, round(avg(y), 3) AS truth_rate,
       round(avg(y) FILTER (WHERE r_ce <= $k), 3) AS p_ce_at_k,
       round(avg(y) FILTER (WHERE r_ent <= $k), 3) AS entropy_at_k,
       round(avg(base) FILTER (WHERE r_ce <= $k), 3) AS random_at_k
FROM ranked
"""


def precision_at_k(lake: Lake, run_id: str, k: int = 3, config: str | None = None) -> pa.Table:
    """precision@k of the lowest-p_CE tokens against `critical_truth`, with the highest-
    entropy tokens and a random pick (its expectation: each rollout's share of truly
    critical positions) as baselines."""
    return query(lake, PRECISION_SQL, {"run": run_id, "k": k, "cfg": config})
