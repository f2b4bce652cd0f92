"""Token rewards labeler → table `token_rewards` (rollout_id, pos, kind, value, flag, provenance).

Kinds (the formulas live, vectorised, in `reward_math`; each function's docstring cites
its paper):

- `dpo`     r_t = β·(log π_dpo(y_t) − log π_ref(y_t)), optionally clipped to ±c
            (Rafailov et al. 2024 "From r to Q*"; RTO; TGDPO's r̂_t is β = 1). π_dpo and
            π_ref are model roles, scored into `scores` first (default: the rollout's own
            policy against role `ref`).
- `grpo`    A_i = (R_i − mean_g R)/(std_g R + ε) on every token of rollout i (DeepSeekMath);
            std_g unbiased as in TRL and verl (`std=population`: tokenmill's earlier variant).
- `tempo`   A_ij = (R_i − μ + V(ℬ) − V(𝒜))/(σ + ε): 𝒜 the group members sharing y_i[<j],
            ℬ ⊆ 𝒜 those that also share y_i[j], V the mean reward of a set (TEMPO's
            prefix tree). `normalize=False` drops the division.
- `d3s`     score_t = |A_t|·H_t, flag = among the top `keep_frac` of the shard (D³S).
- `entropy` value = H_t, flag = H_t ≥ τ, τ the shard's 0.8 quantile: the top 20 % "forking"
            tokens of the 80/20 paper (`window` > 1: a trailing window mean of H instead,
            tokenmill's smoothed variant; `threshold` fixes τ).
            H_t (d3s, entropy) is the policy's exact entropy: from `tokens` where generation
            gave it (hf), else the policy scored with the hf engine (`needs_entropy`; vLLM
            cannot give it, and the label flow refuses that pairing up front).
- `rlpr`    RLPR's debiased reward max(p_r − p_0, 0) (OpenBMB/RLPR's `threshold_0` shaping of
            scoreB − scoreA): p_r = (1/|y*|)·Σ_i p(y*_i | x, z, y*_<i), the reference answer
            y* put after the rollout's reasoning z (the completion up to and including its
            last `Answer:`; the empty string where there is none), p_0 the same with no
            reasoning (y* right after the prompt), both scored by the policy. The
            per-rollout value is written on every token of the rollout, like `grpo`.
- `rlpr_raw` p_r alone (what labeller version 1 stored as `rlpr`).

Groups are the rollouts of one prompt by one model with one sampling configuration. A
rollout without a reward (unverified) gets null values for the outcome-based kinds;
`rlpr` is null where the prompt has no reference. Every token of every rollout gets one
row per kind, so a shard's labels are complete or absent.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.labelers.rewards.config import REWARD_KINDS as KINDS
from tokenmill.labelers.rewards.config import RewardsConfig
from tokenmill.errors import TokenmillError
from tokenmill.schema import TOKEN_REWARDS
from tokenmill.storage.lake import Lake
from tokenmill.tasks import score as score_stage
from tokenmill.tasks.generate import cached_engine, token_keys
from tokenmill.labelers.rewards import reward_math as rm
from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard

_ANSWER = re.compile(r"Answer:")
ENTROPY_KINDS = ("d3s", "entropy")  # kinds that read each token's exact entropy
ROLLOUT_COLUMNS = ["rollout_id", "prompt_id", "model", "sampling", "reward", "num_tokens",
                   "prompt_token_ids", "completion_token_ids", "completion"]


def aligned(table: pa.Table, rollout_ids: pa.Array) -> pa.Table:
    """Rows of a per-token table in the order (rollout order of `rollout_ids`, pos)."""
    order = pa.table({"rollout_id": rollout_ids, "_r": pa.array(np.arange(len(rollout_ids)), pa.int64())})
    return table.join(order, "rollout_id").sort_by([("_r", "ascending"), ("pos", "ascending")]).drop(["_r"])


def _tokens_have_entropy(lake: Lake, run_id: str, rids: pa.Array, lengths: np.ndarray) -> bool:
    tok = lake.read("tokens", run_id, columns=["entropy"], filter=pc.field("rollout_id").isin(rids))
    return tok.num_rows == lengths.sum() and tok.column("entropy").null_count == 0


def _floats(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.float32), pa.float32(), from_pandas=True)  # NaN → null


class RewardsLabeler(Labeler):
    name = "rewards"
    version = "2"  # 2: unbiased group std (grpo, tempo), own-entropy flags, debiased rlpr, d3s keeps no zero score

    def __init__(self, config: RewardsConfig | None = None, models: dict[str, str] | None = None,
                 engine: str = "hf", engine_options: dict | None = None):
        self.cfg = config or RewardsConfig()
        unknown = [k for k in self.cfg.kinds if k not in KINDS]
        if unknown:
            raise TokenmillError(f"unknown reward kind {unknown[0]!r}", fix=f"choose from {', '.join(KINDS)}")
        self.models = {"policy": score_stage.POLICY, **(models or {})}
        self.engine, self.engine_options = engine, engine_options or {}

    def roles(self) -> dict[str, str]:
        if "dpo" not in self.cfg.kinds:
            return {}
        return {r: self._model(r) for r in (self.cfg.dpo_role, self.cfg.ref_role)}

    @property
    def needs_entropy(self) -> list[str]:
        return [f"rewards kind {k!r}" for k in self.cfg.kinds if k in ENTROPY_KINDS]

    def without_entropy(self) -> str | None:
        rest = [k for k in self.cfg.kinds if k not in ENTROPY_KINDS]
        return f"--kinds {','.join(rest)}" if rest else None

    def prepare(self, lake: Lake, run_id: str) -> dict:
        """Refuse a scoring role whose model reads the run's token ids with another tokenizer,
        before anything is scored."""
        roles = {r: m for r, m in self.roles().items() if m != score_stage.POLICY}
        if roles:
            policies = pc.unique(lake.read("rollouts", run_id, columns=["model"]).column("model")).to_pylist()
            for role, model in roles.items():
                score_stage.check_scoring_tokenizer(role, score_stage.model_source(lake, model), policies)
        return {}

    def _model(self, role: str) -> str:
        if role not in self.models:
            raise TokenmillError(f"rewards: no model given for role {role!r}",
                                 fix=f"pass --model {role}=MODEL (e.g. {role}=tiny-small)")
        return self.models[role]

    def kind_params(self, kind: str) -> tuple[dict, dict]:
        """(models, params) that determine the values of one kind: its config id's inputs."""
        c = self.cfg
        if kind == "dpo":
            return ({"dpo": self._model(c.dpo_role), "ref": self._model(c.ref_role)},
                    {"beta": c.beta, "clip": c.clip, "dpo_role": c.dpo_role, "ref_role": c.ref_role})
        if kind in ("grpo", "tempo"):
            return {}, {"eps": c.eps, "normalize": c.normalize, "std": c.std}
        if kind == "d3s":
            return {}, {"eps": c.eps, "normalize": c.normalize, "std": c.std, "keep_frac": c.keep_frac,
                        "advantage": c.d3s_advantage}
        if kind == "entropy":
            return {"policy": "policy"}, {"window": c.window, "threshold": c.threshold, "quantile": c.quantile}
        return {"policy": "policy"}, {}  # rlpr

    def config_ids(self) -> dict[str, str]:
        return {k: config_id(self.name, self.version, *self.kind_params(k), kind=k) for k in self.cfg.kinds}

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        cids = self.config_ids()
        todo = [k for k in self.cfg.kinds if not is_done(lake, run_id, cids[k], shard)]
        if not todo:
            return {}
        rollouts = read_rollouts_shard(lake, shard, ROLLOUT_COLUMNS)
        rids = rollouts.column("rollout_id").combine_chunks()
        lengths = rollouts.column("num_tokens").to_numpy().astype(np.int64)
        if "dpo" in todo:
            score_stage.score_shard(lake, run_id, shard, self.roles(), self.engine, self.engine_options)
        if set(ENTROPY_KINDS) & set(todo) and not _tokens_have_entropy(lake, run_id, rids, lengths):
            # the policy's exact entropy, where generation did not give it (missing rows only)
            score_stage.score_shard(lake, run_id, shard, {"policy": score_stage.POLICY}, self.engine,
                                    self.engine_options, entropy=True)
        values = self.compute(lake, run_id, rollouts, rids, lengths, todo)
        written = {}
        keys = token_keys(rids.to_pylist(), lengths)
        for kind in todo:
            value, flag = values[kind]
            models, params = self.kind_params(kind)
            n = len(value)
            table = pa.table({
                **keys,
                "kind": pa.array(np.full(n, kind, dtype=object), pa.string()),
                "value": _floats(value),
                "flag": pa.array(flag, pa.bool_()) if flag is not None else pa.nulls(n, pa.bool_()),
                **provenance(n, self.name, self.version, models, params, kind),
            }, schema=TOKEN_REWARDS.schema)
            written[kind] = lake.commit("token_rewards", run_id, table).rows_written
            mark_done(lake, run_id, cids[kind], shard)
        return written

    def compute(self, lake: Lake, run_id: str, rollouts: pa.Table, rids: pa.Array, lengths: np.ndarray,
                kinds: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Every requested kind's flat (value, flag) arrays for the shard's tokens."""
        c = self.cfg
        out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        cache: dict = {}  # rlpr and rlpr_raw share one scoring pass
        reward = rollouts.column("reward").to_numpy(zero_copy_only=False).astype(np.float64)  # null → NaN
        groups = pc.binary_join_element_wise(rollouts.column("prompt_id"), rollouts.column("model"),
                                             rollouts.column("sampling"), "\x1f").to_numpy(zero_copy_only=False)
        known = ~np.isnan(reward)
        adv = {}
        if {"grpo", "d3s"} & set(kinds):
            a = np.full(len(reward), np.nan)
            a[known] = rm.group_advantages(reward[known], groups[known], c.eps, c.normalize, c.std)
            adv["grpo"] = rm.broadcast(a, lengths)
        if "tempo" in kinds or ("d3s" in kinds and c.d3s_advantage == "tempo"):
            token_ids = pc.list_flatten(rollouts.column("completion_token_ids")).to_numpy()
            tok_known = np.repeat(known, lengths)
            a = np.full(len(token_ids), np.nan)
            a[tok_known] = rm.tempo_advantages(token_ids[tok_known], lengths[known], reward[known], groups[known],
                                               c.eps, c.normalize, c.std)
            adv["tempo"] = a
        entropy = None
        if {"d3s", "entropy"} & set(kinds):
            entropy = self._entropy(lake, run_id, rids, lengths)
        for kind in kinds:
            if kind in ("grpo", "tempo"):
                out[kind] = (adv[kind], None)
            elif kind == "d3s":
                a = adv[c.d3s_advantage]
                ok = ~np.isnan(a)
                value, keep = np.full(len(a), np.nan), np.zeros(len(a), bool)
                if ok.any():
                    value[ok], keep[ok] = rm.d3s_scores(a[ok], entropy[ok], c.keep_frac)
                out[kind] = (value, keep)
            elif kind == "entropy":
                _, flag, _ = rm.window_entropy(entropy, lengths, c.window, c.threshold, c.quantile)
                out[kind] = (entropy, flag)
            elif kind == "dpo":
                lp = {role: aligned(lake.read("scores", run_id, columns=["rollout_id", "pos", "logprob"],
                                              filter=score_stage.role_rows(role, self._model(role))
                                              & pc.field("rollout_id").isin(rids)),
                                    rids).column("logprob").to_numpy()
                      for role in (c.dpo_role, c.ref_role)}
                out[kind] = (rm.dpo_token_rewards(lp[c.dpo_role], lp[c.ref_role], c.beta, c.clip), None)
            elif kind in ("rlpr", "rlpr_raw"):
                if "rlpr" not in cache:
                    cache["rlpr"] = self._rlpr(lake, run_id, rollouts)
                raw, base = cache["rlpr"]
                value = rm.rlpr_debiased(raw, base) if kind == "rlpr" else raw
                out[kind] = (rm.broadcast(value, lengths), None)
        return out

    def _entropy(self, lake: Lake, run_id: str, rids: pa.Array, lengths: np.ndarray) -> np.ndarray:
        """Exact entropy of each token under its policy: from `tokens` (generation), else the
        policy's `scores` (engines such as vLLM cannot give exact entropy while generating)."""
        flt = pc.field("rollout_id").isin(rids)
        tok = aligned(lake.read("tokens", run_id, columns=["rollout_id", "pos", "entropy"], filter=flt), rids)
        if tok.column("entropy").null_count == 0 and tok.num_rows == lengths.sum():
            return tok.column("entropy").to_numpy().astype(np.float64)
        sc = lake.read("scores", run_id, columns=["rollout_id", "pos", "entropy"], filter=flt & (pc.field("model") == "policy"))
        if sc.num_rows < lengths.sum() or sc.column("entropy").null_count:
            # e.g. the policy was scored by vLLM for dpo earlier: those rows stay (scores dedupe)
            raise TokenmillError(f"rewards kinds {'/'.join(ENTROPY_KINDS)}: run {run_id!r} has no exact entropy for "
                                 f"{sc.column('entropy').null_count + max(int(lengths.sum()) - sc.num_rows, 0)} tokens "
                                 "(generated and scored under role 'policy' by an engine that cannot give it, vllm)",
                                 fix=f"leave those kinds out (--kinds), or delete {lake.uri}/scores/run_id={run_id} (the "
                                 "label flow re-scores what is missing) and label again with --engine hf")
        return aligned(sc, rids).column("entropy").to_numpy().astype(np.float64)

    def _rlpr(self, lake: Lake, run_id: str, rollouts: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Per rollout, the mean probability of the reference answer after the rollout's
        reasoning (p_r) and right after the prompt (p_0, scored once per prompt and model)."""
        refs = lake.read("prompts", run_id, columns=["prompt_id", "reference"])
        ref_of = dict(zip(refs.column("prompt_id").to_pylist(), refs.column("reference").to_pylist()))
        pids = rollouts.column("prompt_id").to_pylist()
        texts = rollouts.column("completion").to_pylist()
        out, base = np.full(len(pids), np.nan), np.full(len(pids), np.nan)
        has_ref = np.array([ref_of.get(p) is not None for p in pids], dtype=bool)
        for model in pc.unique(rollouts.column("model")).to_pylist():
            rows = np.flatnonzero(has_ref & (rollouts.column("model").to_numpy(zero_copy_only=False) == model))
            if not len(rows):
                continue
            engine = cached_engine(self.engine, model, **self.engine_options)
            # per rollout (not per token): cut the text at its last "Answer:" and append y*
            reasoning = [texts[i][: m[-1].end()] + " " if (m := list(_ANSWER.finditer(texts[i]))) else "" for i in rows]
            prompts = [rollouts.column("prompt_token_ids")[int(i)].as_py() for i in rows]
            out[rows] = _reference_probability(engine, prompts, reasoning, [ref_of[pids[i]] for i in rows])
            # p_0: no reasoning, once per prompt (every rollout of a prompt shares it)
            row_pids = np.array([pids[i] for i in rows], dtype=object)
            _, firsts, inverse = np.unique(row_pids, return_index=True, return_inverse=True)
            p0 = _reference_probability(engine, [prompts[k] for k in firsts], [""] * len(firsts),
                                        [ref_of[row_pids[k]] for k in firsts])
            base[rows] = p0[inverse.ravel()]
        return out, base


def _reference_probability(engine, prompts: list, reasoning: list[str], references: list[str]) -> np.ndarray:
    """Per row, the mean probability of the reference's tokens when `reasoning` + reference
    follows the prompt (the tokens reaching into the reference count)."""
    full = [z + y for z, y in zip(reasoning, references)]
    enc = engine.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    scored = engine.score(prompts, enc["input_ids"], top_k=1, entropy=False)
    lp = np.concatenate([s.logprobs for s in scored])
    ends = np.concatenate([np.asarray(o, dtype=np.int64).reshape(-1, 2)[:, 1] for o in enc["offset_mapping"]])
    starts = np.repeat([len(z) for z in reasoning], [len(e) for e in enc["input_ids"]])
    is_ref = ends > starts  # tokens reaching into y*
    seq = np.repeat(np.arange(len(full)), [len(e) for e in enc["input_ids"]])
    return rm.rlpr_rewards(lp[is_ref], np.bincount(seq[is_ref], minlength=len(full))).astype(np.float64)

