"""Routing labels (R2R: "Roads to Rome: Efficiently Navigating Divergent Reasoning Paths
with Small-Large Model Token Routing", Fu et al. 2025).

A large model's trajectory y (greedy by default) is teacher-forced through the small
model. With ŷ_t = argmax_v p_small(v | x, y_<t):

    label_t = 0 (identical)    if ŷ_t = y_t, or y_t is the large model's end-of-thinking token
                               (R2R's `data_process.py`: only that token is exempt)
    label_t = 1 (neutral)      if ŷ_t ≠ y_t and V(t) = 0
    label_t = 2 (divergent)    if ŷ_t ≠ y_t and V(t) = 1
    label_t = 3 (undecidable)  if ŷ_t ≠ y_t and V(t) cannot say (below); the router's training
                               set leaves these tokens out

V compares two continuations of the common context c = x ⊕ y_<t:
  candidate  ŷ_t ⊕ L(c ⊕ ŷ_t), the large model L continuing greedily after the small token,
  reference  y_t ⊕ y_>t, the trajectory itself,
both cut after the same number of sentence ends (R2R's stop rule: 2). Two verifiers:
  * `judge`: a model is asked, with R2R's prompt, whether the divergence changes meaning,
    reasoning or conclusions; its reply is parsed by regex ("output … <d>", else the
    first integer) into 1 / 0, and −1 when neither is found (recorded; undecidable, as
    R2R drops such replies; `unparsable` divergent or neutral are tokenmill variants). A
    judge prompt longer than the judge's context is an error before any judging;
  * `outcome`: for worlds with exact answers, L continues c ⊕ ŷ_t to the end and the
    verifier scores it (r̂) against the trajectory's reward r, so that the classes mean
    what the judge's do (the trajectory is the reference):
      r̂ < r               divergent  (the small token makes the answer worse)
      r̂ = r, r correct    neutral    (same outcome from a correct reference)
      r̂ > r               neutral    (the small token fixes the answer: not routed)
      r̂ = r, r incorrect  undecidable (both wrong: the outcome cannot tell)

The small model's router features (final state, top-k logits, argmax) at every position
go to `router_features` (float16) for `tasks/train/router.py`; with `features` off only its
argmax is computed and nothing goes there (labels to weight training tokens need no router).
"""

from __future__ import annotations

import re
import time
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.labelers.routing.config import RoutingConfig
from tokenmill.capabilities import GENERATE, NEXT_TOKEN_FEATURES
from tokenmill.engines import SamplingParams, engine_for
from tokenmill.errors import TokenmillError
from tokenmill.schema import ROUTER_FEATURES, ROUTING
from tokenmill.storage.lake import Lake
from tokenmill.tasks.generate import _cat, cached_engine, list_array, token_keys
from tokenmill.tasks.prompts import describe, run_prompts
from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard

IDENTICAL, NEUTRAL, DIVERGENT, UNDECIDABLE = 0, 1, 2, 3
THINK_END = ("</think>",)  # end-of-thinking tokens R2R exempts from mismatches
ROLLOUT_COLUMNS = ["rollout_id", "model", "prompt_id", "prompt_token_ids", "completion_token_ids", "reward"]

# R2R's judge prompt (same task, criteria, two worked examples and answer slot), in our words
R2R_JUDGE_TEMPLATE = """You compare the meaning of two texts.

Task: decide whether the difference between Sentence 1 and Sentence 2 changes the meaning, reasoning, logic or conclusions.
The marker << >> shows where the two sentences start to differ; it is not part of the text.

Output 1 if the difference changes meaning, reasoning, logic or conclusions, adds new information, shifts focus, contradicts earlier facts, or the sentences follow different reasoning paths.
Output 0 if the difference is superficial: both follow the same reasoning and reach the same conclusion.

Example (0):
Sentence 1: "The ratio of adults to all people <<is>> now 11/25."
Sentence 2: "The ratio of adults to all people <<chang>>ed from 5/12 to 11/25."
Output: 0

Example (1):
Sentence 1: "We solve this by <<integration>> by parts."
Sentence 2: "We solve this by <<substitution>>."
Output: 1

Common context:
\"\"\"
{context}
\"\"\"

Sentence 1:
\"\"\"
{reference}
\"\"\"

Sentence 2:
\"\"\"
{candidate}
\"\"\"

Answer (Output: <0 or 1>):
"""

_OUTPUT = re.compile(r"(?i)\boutput\b[^0-9]*?(\d+)")
_INTEGER = re.compile(r"\d+")


def parse_judge(reply: str) -> int:
    """The judge's verdict: 1 divergent, 0 neutral, −1 when the reply holds neither."""
    m = _OUTPUT.search(reply)
    value = m.group(1) if m else (lambda n: n.group() if n else None)(_INTEGER.search(reply))
    return int(value) if value in ("0", "1") else -1


@lru_cache(maxsize=8)
def _sentence_end_mask(tokenizer) -> np.ndarray:
    texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    decoded = [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in texts]  # once per tokenizer
    return np.array([("\n" in d) or d.rstrip(" ").endswith((".", "!", "?")) for d in decoded], dtype=bool)


def sentence_end_mask(tokenizer) -> np.ndarray:
    """[V] bool: tokens that end a sentence — a newline, or text ending in . ! ? (R2R stops
    continuations on such tokens)."""
    return _sentence_end_mask(tokenizer)


def cut_after_sentences(ids: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """`ids` up to and including its n-th sentence-end token (all of it if it has fewer)."""
    ids = np.asarray(ids, dtype=np.int64)
    hits = np.flatnonzero(ends[ids]) if len(ids) else ids
    return ids[: hits[n - 1] + 1] if len(hits) >= n else ids


def think_end_mask(tokenizer) -> np.ndarray:
    """[V] bool: the vocabulary's end-of-thinking token(s) (none in a model without one)."""
    mask = np.zeros(len(tokenizer), dtype=bool)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in THINK_END]
    unk = getattr(tokenizer, "unk_token_id", None)
    mask[[i for i in ids if isinstance(i, int) and i != unk and 0 <= i < len(mask)]] = True
    return mask


def mismatches(large: np.ndarray, small: np.ndarray, exempt: np.ndarray) -> np.ndarray:
    """Positions where the small model's argmax differs from the trajectory's token, except
    where the trajectory's token is exempt (the end of thinking), as R2R's
    `mismatch_mask = (SLM != LLM) & (real_token != think_end)`."""
    return (large != small) & ~exempt[large]


def outcome_verdict(reference: float, candidate: float) -> int:
    """The outcome verifier's verdict: 1 divergent (the candidate's reward is lower), 0 neutral
    (equal from a correct reference, or higher: the small token fixes the answer), −1
    undecidable (equal from an incorrect reference)."""
    if candidate < reference:
        return 1
    if candidate > reference or reference >= 1.0:
        return 0
    return -1


def check_same_tokenizer(small_tok, large_tok, small: str, large: str) -> None:
    """Routing hands single tokens between the models, so they must share one vocabulary."""
    from tokenmill.engines import tokenizer_difference

    problem = tokenizer_difference(small_tok, large_tok)
    if problem:
        raise TokenmillError(f"routing: {small} and {large} have different tokenizers: {problem}",
                             fix="route between two models of one family (same tokenizer), e.g. tiny-small + tiny-large")


def judge_prompt(tokenizer, template: str, context: str, reference: str, candidate: str, room: int) -> list[int]:
    """The judge prompt as token ids; the common context is cut from the left to fit `room`."""
    head, tail = template.split("{context}", 1)
    after = tokenizer(tail.format(reference=reference, candidate=candidate), add_special_tokens=False)["input_ids"]
    before = tokenizer(head)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    keep = max(room - len(before) - len(after), 0)
    return before + (ctx[len(ctx) - keep:] if keep else []) + after


class RoutingLabeler(Labeler):
    name = "routing"
    version = "2"  # 2: outcome classes as the judge's, undecidable (3) kept out of training, only end-of-thinking exempt

    def __init__(self, config: RoutingConfig | None = None, engine: str = "hf", engine_options: dict | None = None):
        self.cfg = config or RoutingConfig()
        # the small model gives R2R's features; the large model and the judge only generate,
        # so they run on the run's engine where it can
        self.small_engine = engine_for({NEXT_TOKEN_FEATURES}, engine, engine_options)
        self.large_engine = engine_for({GENERATE}, engine, engine_options)
        self.timings = {"features": 0.0, "continuation": 0.0, "verification": 0.0, "tokens": 0, "mismatches": 0}

    def _small(self):
        kind, opts = self.small_engine
        return cached_engine(kind, self.cfg.small, **opts)

    def _large(self, name: str):
        kind, opts = self.large_engine
        return cached_engine(kind, name, **opts)

    def params(self) -> dict:
        # features off is other work (no router_features rows): its own config id; on, the ids of before the option
        return {**self.cfg.model_dump(exclude={"small", "judge_model", "features"}),
                **({} if self.cfg.features else {"features": False})}

    def _models(self, large: str) -> dict:
        models = {"small": self.cfg.small, "large": large}
        if self.cfg.verifier == "judge":
            models["judge"] = self.cfg.judge_model or large
        return models

    def large_models(self, lake: Lake, run_id: str) -> list[str]:
        models = pc.unique(lake.read("rollouts", run_id, columns=["model"]).column("model")).to_pylist()
        return sorted(m for m in models if m != self.cfg.small)

    def prepare(self, lake: Lake, run_id: str) -> dict:
        """Refuse any (small, large) pair of the run whose tokenizers differ, and (outcome
        verifier) prompts without an exact answer to check, before any work."""
        small = self._small()
        large = self.large_models(lake, run_id)
        for name in large:
            check_same_tokenizer(small.tokenizer, self._large(name).tokenizer, self.cfg.small, name)
        if self.cfg.verifier == "outcome" and large:
            from tokenmill.tasks.verify import verifier_name

            unverifiable = [p for p in run_prompts(lake, run_id).values() if verifier_name(p) is None]
            if unverifiable:
                raise TokenmillError(f"routing: the outcome verifier needs prompts with exact answers; "
                                     f"{describe(unverifiable[0])} has none"
                                     + (f", nor do {len(unverifiable) - 1} more" if len(unverifiable) > 1 else ""),
                                     fix="label with --routing-verifier judge, or use a world or a source with "
                                         "reference answers (--reference-field)")
        return {"small": self.cfg.small, "large": large}

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        rollouts = read_rollouts_shard(lake, shard, ROLLOUT_COLUMNS)
        rollouts = rollouts.filter(pc.field("model") != self.cfg.small)
        written = {"routing": 0, "router_features": 0}
        for large in pc.unique(rollouts.column("model")).to_pylist():
            models = self._models(large)
            cid = config_id(self.name, self.version, models, self.params())
            if is_done(lake, run_id, cid, shard):
                continue
            rows = rollouts.filter(pc.field("model") == large)
            table, features = self.label(rows, large, run_prompts(lake, run_id, rows.column("prompt_id")))
            if features is not None:
                written["router_features"] += lake.commit("router_features", run_id, features).rows_written
            written["routing"] += lake.commit("routing", run_id, table).rows_written
            mark_done(lake, run_id, cid, shard)
        return written

    def label(self, rollouts: pa.Table, large_name: str, prompts: dict) -> tuple[pa.Table, pa.Table]:
        """(routing rows, router_features rows or None without `features`) of `rollouts`,
        trajectories of `large_name`."""
        cfg = self.cfg
        small = self._small()
        large = self._large(large_name)
        check_same_tokenizer(small.tokenizer, large.tokenizer, cfg.small, large_name)
        tok = large.tokenizer
        rids = rollouts.column("rollout_id").to_pylist()
        p_ids = rollouts.column("prompt_token_ids").to_pylist()
        comps = [np.asarray(c, np.int32) for c in rollouts.column("completion_token_ids").to_pylist()]
        lengths = np.array([len(c) for c in comps], dtype=np.int64)

        t0 = time.perf_counter()
        if cfg.features:
            feats = small.next_token_features(p_ids, comps, top_k=cfg.top_k)
            top1 = [f.top_ids[:, 0] for f in feats]
        else:  # the argmax alone: no states, no top-k logits
            top1 = [s.topk_ids[:, 0] for s in small.score(p_ids, comps, top_k=1, entropy=False)]
        self.timings["features"] += time.perf_counter() - t0
        y = _cat(comps, np.int32)
        pred = _cat(top1, np.int32)
        mism = mismatches(y, pred, think_end_mask(tok))
        seq = np.repeat(np.arange(len(comps)), lengths)
        pos = np.arange(len(y)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        where = np.flatnonzero(mism)
        label = np.zeros(len(y), np.int8)
        small_text = np.full(len(y), None, dtype=object)
        large_text = np.full(len(y), None, dtype=object)
        verdict = np.full(len(y), None, dtype=object)
        raw = np.full(len(y), None, dtype=object)
        if len(where):
            jobs = [(int(seq[j]), int(pos[j]), int(pred[j])) for j in where]  # one per mismatch, not per token
            s_txt, l_txt, v, r = self._verify(jobs, p_ids, comps, rollouts, prompts, large, self._models(large_name))
            small_text[where], large_text[where], raw[where] = s_txt, l_txt, r
            verdict[where] = v
            v = np.asarray(v)
            undecided = {"drop": UNDECIDABLE, "divergent": DIVERGENT, "neutral": NEUTRAL}[cfg.unparsable]
            label[where] = np.select([v == 1, v == 0], [DIVERGENT, NEUTRAL], undecided)
        self.timings["tokens"] += len(y)
        self.timings["mismatches"] += len(where)

        n = len(y)
        models = self._models(large_name)
        table = pa.table({
            **token_keys(rids, lengths),
            "label": pa.array(label, pa.int8()),
            "large_token_id": pa.array(y, pa.int32()),
            "small_token_id": pa.array(pred, pa.int32()),
            "is_mismatch": pa.array(mism, pa.bool_()),
            "small_continuation": pa.array(small_text, pa.string()),
            "large_continuation": pa.array(large_text, pa.string()),
            "verifier": pa.array(np.full(n, cfg.verifier, dtype=object), pa.string()),
            "verdict": pa.array(verdict, pa.int8()),
            "verdict_raw": pa.array(raw, pa.string()),
            "small_model": pa.array(np.full(n, cfg.small, dtype=object), pa.string()),
            "large_model": pa.array(np.full(n, large_name, dtype=object), pa.string()),
            **provenance(n, self.name, self.version, models, self.params()),
        }, schema=ROUTING.schema)
        if not cfg.features:
            return table, None
        d, k = (feats[0].state.shape[1], feats[0].top_logits.shape[1]) if feats else (0, 0)
        features = pa.table({
            **token_keys(rids, lengths),
            "model": pa.array(np.full(n, cfg.small, dtype=object), pa.string()),
            "pred_id": pa.array(pred, pa.int32()),
            "state": list_array(_cat([f.state.reshape(-1) for f in feats], np.float16), np.full(n, d), pa.float16()),
            "top_logits": list_array(_cat([f.top_logits.reshape(-1) for f in feats], np.float16), np.full(n, k), pa.float16()),
        }, schema=ROUTER_FEATURES.schema)
        return table, features

    def _verify(self, jobs, p_ids, comps, rollouts, prompts, large, models):
        """Continue every mismatch with the large model and verify: (candidate texts,
        reference texts, verdicts, raw verdicts), one per job."""
        cfg = self.cfg
        tok = large.tokenizer
        ends = sentence_end_mask(tok)
        outcome = cfg.verifier == "outcome"
        starts = [list(p_ids[i]) + comps[i][:t].tolist() + [s] for i, t, s in jobs]
        t0 = time.perf_counter()
        gens = large.generate(starts, SamplingParams(n=1, temperature=0.0, logprobs=0,
                                                     max_tokens=cfg.outcome_tokens if outcome else cfg.continuation_tokens))
        self.timings["continuation"] += time.perf_counter() - t0
        cand = [cut_after_sentences(np.r_[s, g.token_ids], ends, cfg.sentences) for (_, _, s), g in zip(jobs, gens)]
        ref = [cut_after_sentences(comps[i][t:], ends, cfg.sentences) for i, t, _ in jobs]
        c_txt = tok.batch_decode(cand, skip_special_tokens=True)
        r_txt = tok.batch_decode(ref, skip_special_tokens=True)
        t0 = time.perf_counter()
        if outcome:
            verdicts, raws = self._outcome(jobs, comps, rollouts, prompts, gens, tok)
        else:
            contexts = tok.batch_decode([comps[i][:t] for i, t, _ in jobs], skip_special_tokens=True)
            verdicts, raws = self._judge(models["judge"], contexts, c_txt, r_txt, jobs, comps, tok)
        self.timings["verification"] += time.perf_counter() - t0
        return c_txt, r_txt, verdicts, raws

    def _outcome(self, jobs, comps, rollouts, prompts, gens, tok):
        from tokenmill.tasks.verify import verify_one

        pids = rollouts.column("prompt_id").to_pylist()
        old = rollouts.column("reward").to_pylist()
        texts = tok.batch_decode([np.r_[comps[i][:t], s, g.token_ids] for (i, t, s), g in zip(jobs, gens)],
                                 skip_special_tokens=True)
        verdicts, raws = [], []
        for (i, _, _), text in zip(jobs, texts):
            name, v = verify_one(prompts[pids[i]], text)
            if v is None or old[i] is None:
                raise TokenmillError(f"routing: the outcome verifier needs verified rollouts with exact answers; "
                                     f"prompt {pids[i]!r} has none",
                                     fix="label with --routing-verifier judge, or use a world with answers")
            verdicts.append(outcome_verdict(old[i], v.reward))
            raws.append(f"reward {old[i]:g} -> {v.reward:g}")
        return verdicts, raws

    def _judge(self, judge_name, contexts, candidates, references, jobs, comps, tok):
        cfg = self.cfg
        judge = self._large(judge_name)
        jt = judge.tokenizer
        template = cfg.judge_template or R2R_JUDGE_TEMPLATE
        limit = getattr(judge.model.config, "max_position_embeddings", 4096)
        room = limit - cfg.judge_tokens
        small_tok = tok.batch_decode([[s] for _, _, s in jobs])
        large_tok = tok.batch_decode([[int(comps[i][t])] for i, t, _ in jobs])
        prompts = []
        for ctx, c, r, st, lt in zip(contexts, candidates, references, small_tok, large_tok):
            # R2R marks where the two texts part: the differing tokens inside << >>
            ids = judge_prompt(jt, template, ctx, "<<" + lt + ">>" + r[len(lt):], "<<" + st + ">>" + c[len(st):], room)
            if len(ids) > room:  # a truncated prompt would judge nothing: every label a guess
                raise TokenmillError(
                    f"routing: the judge prompt is {len(ids)} tokens, {judge_name}'s context leaves {room} "
                    f"({limit} − {cfg.judge_tokens} reply tokens)",
                    fix="use a judge with a longer context (--judge-model), a shorter --judge-template, or "
                        "--routing-verifier outcome")
            prompts.append(ids)
        gens = judge.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=cfg.judge_tokens, logprobs=0))
        replies = jt.batch_decode([g.token_ids for g in gens], skip_special_tokens=True)
        return [parse_judge(rep) for rep in replies], replies
