"""Hallucination spans: entity spans of each completion, their ground truth, and their
uncertainty — after "Real-Time Detection of Hallucinated Entities in Long-Form
Generation" (Obeso et al. 2025: entity-level labels, token-level training format), CCP
(Fadeeva et al. 2024) and SelfCheckGPT (Manakul et al. 2023).

Per rollout: spans from the extractors (`spans.py`; by default a knowledge-base world's
own claims for its rollouts — bios, countries — and the generic extractors for the
rest), mapped onto the tokens they overlap through `tokens.char_start/char_end`; a label
per span from the annotator (`annotators.py`: supported / not_supported / unverifiable,
by the rollout's world's `judge`); per span min/mean token
probability, mean entropy, CCP and cross-sample consistency (`uncertainty.py`, formulas
there). Output: table `hallucination_spans`; the catalog view `hallucination_tokens` gives
the per-token format (1 / 0 inside spans, −100 elsewhere) that `tasks/train/probe.py`
trains on.

The statistics are the generating model's own (from `tokens`), so labelling needs no
model pass except for CCP's equivalence judge (the tokenizer, for the surface judge).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill import ids
from tokenmill.labelers.hallucination.config import HallucinationConfig
from tokenmill.schema import HALLUCINATION_SPANS
from tokenmill.storage.lake import Lake
from tokenmill.tasks.prompts import run_prompts
from tokenmill.engines import load_tokenizer
from tokenmill.labelers.hallucination.annotators import ANNOTATORS, FileAnnotator
from tokenmill.labelers.base import Labeler, config_id, is_done, mark_done, provenance, read_rollouts_shard
from tokenmill.labelers.hallucination.spans import GENERIC, extract, extract_kb, get_extractor, spans_to_tokens
from tokenmill.labelers.hallucination.uncertainty import JUDGES, ccp_word, consistency, segment_stats

ROLLOUT_COLUMNS = ["rollout_id", "model", "prompt_id", "completion"]
TOKEN_COLUMNS = ["rollout_id", "pos", "token_id", "logprob", "entropy", "topk_ids", "topk_logprobs", "char_start", "char_end"]


class HallucinationLabeler(Labeler):
    name = "hallucination"
    version = "3"  # 3: "Insufficient Information" verdicts are hallucinations (upstream); per-span null entropy

    def __init__(self, config: HallucinationConfig | None = None):
        self.cfg = config or HallucinationConfig()
        for name in self.cfg.extractors or []:
            get_extractor(name)  # unknown names fail before any work
        self.file = FileAnnotator(self.cfg.verdicts_file, self.cfg.insufficient) if self.cfg.verdicts_file else None

    def params(self) -> dict:
        p = self.cfg.model_dump(exclude={"verdicts_file"})
        if self.file:  # the verdicts themselves, not the path, identify the labels
            p["verdicts"] = ids.content_id(self.file.path.read_text())
        return p

    def label_shard(self, lake: Lake, run_id: str, shard: str) -> dict[str, int]:
        cid = config_id(self.name, self.version, {}, self.params())
        if is_done(lake, run_id, cid, shard):
            return {"hallucination_spans": 0}
        rollouts = read_rollouts_shard(lake, shard, ROLLOUT_COLUMNS).sort_by("rollout_id")
        tokens = lake.read("tokens", run_id, columns=TOKEN_COLUMNS,
                           filter=pc.field("rollout_id").isin(rollouts.column("rollout_id"))
                           ).sort_by([("rollout_id", "ascending"), ("pos", "ascending")])
        prompts = run_prompts(lake, run_id, rollouts.column("prompt_id"))
        table = self.label(rollouts, tokens, prompts)
        n = lake.commit("hallucination_spans", run_id, table).rows_written
        mark_done(lake, run_id, cid, shard)
        return {"hallucination_spans": n}

    def label(self, rollouts: pa.Table, tokens: pa.Table, prompts: dict) -> pa.Table:
        """`hallucination_spans` rows of `rollouts` (sorted by rollout_id) from their `tokens`
        (sorted by rollout_id, pos)."""
        tokens = tokens.filter(pc.is_in(tokens.column("rollout_id"), value_set=rollouts.column("rollout_id").combine_chunks()))
        rids = rollouts.column("rollout_id").to_pylist()
        texts = rollouts.column("completion").to_pylist()
        models = rollouts.column("model").to_pylist()
        pids = rollouts.column("prompt_id").to_pylist()
        rows = {"rollout_id": rids, "completion": texts, "prompt": [prompts.get(p) for p in pids]}
        spans = self._spans(rows)

        counts = pc.value_counts(tokens.column("rollout_id")).to_pylist()
        per = {c["values"]: c["counts"] for c in counts}
        lengths = np.array([per.get(r, 0) for r in rids], np.int64)
        first = np.cumsum(lengths) - lengths
        start, end = spans_to_tokens(spans["row"], spans["char_start"], spans["char_end"],
                                     tokens.column("char_start").to_numpy(), tokens.column("char_end").to_numpy(), lengths)
        g_first, g_last = first[spans["row"]] + start, first[spans["row"]] + end
        logprob = tokens.column("logprob").to_numpy().astype(np.float64)
        min_p, mean_p, _ = segment_stats(np.exp(logprob), g_first, g_last)
        # a token without entropy (a vLLM rollout) nulls only the spans it is in, not the shard's
        entropy = tokens.column("entropy").to_numpy(zero_copy_only=False).astype(np.float64)  # null → NaN
        mean_h = segment_stats(entropy, g_first, g_last)[1]
        ccp = self._ccp(tokens, models, rids, lengths, g_first, g_last)
        group = np.array([f"{pids[r]}\x1f{models[r]}" for r in spans["row"]], dtype=object)
        sizes: dict = {}
        for p, m in zip(pids, models):
            sizes[f"{p}\x1f{m}"] = sizes.get(f"{p}\x1f{m}", 0) + 1
        cons = consistency(spans["row"], group, spans["entity_type"], spans["text"], sizes)

        labels = spans["label"]
        n = len(start)
        span_id = np.arange(n) - np.searchsorted(spans["row"], spans["row"], side="left")  # rows are sorted

        def f32(x):
            return pa.array(np.where(np.isnan(x), None, x) if n else x, pa.float32(), from_pandas=True)

        return pa.table({
            "rollout_id": pa.array([rids[r] for r in spans["row"]], pa.string()),
            "span_id": pa.array(span_id, pa.int32()),
            "start_pos": pa.array(start, pa.int32()), "end_pos": pa.array(end, pa.int32()),
            "char_start": pa.array(spans["char_start"], pa.int32()), "char_end": pa.array(spans["char_end"], pa.int32()),
            "text": pa.array(spans["text"], pa.string()), "entity_type": pa.array(spans["entity_type"], pa.string()),
            "label": pa.array(labels, pa.string()),
            "min_prob": f32(min_p), "mean_prob": f32(mean_p), "mean_entropy": f32(mean_h), "ccp": f32(ccp),
            "consistency": f32(cons),
            "extractor": pa.array(spans["extractor"], pa.string()),
            "annotator": pa.array(spans["annotator"], pa.string()),
            "model": pa.array([models[r] for r in spans["row"]], pa.string()),
            **provenance(n, self.name, self.version, {}, self.params()),
        }, schema=HALLUCINATION_SPANS.schema)

    def _spans(self, rows: dict) -> dict[str, np.ndarray]:
        """Extracted (and file) spans with their labels and annotator, sorted by (row, char_start)."""
        texts = rows["completion"]
        from tokenmill.sources.worlds import world_with

        # per rollout, its world where that world reads claims (bios, countries), else None
        worlds = [world_with(p.world, "claims") if p is not None else None for p in rows["prompt"]]
        if self.cfg.extractors is None:  # auto: the KB world's claims where there is one, generic extractors elsewhere
            parts = [extract_kb(texts, worlds),
                     extract([t if w is None else "" for t, w in zip(texts, worlds)], [get_extractor(g) for g in GENERIC])]
        else:  # "kb" reads each rollout with its own world; the others read every text
            parts = [extract(texts, [get_extractor(e) for e in self.cfg.extractors if e != "kb"])]
            if "kb" in self.cfg.extractors:
                parts.append(extract_kb(texts, worlds))
        spans = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        annotator = ANNOTATORS[self.cfg.annotator]() if self.cfg.annotator != "none" else None
        spans["label"] = annotator.annotate(spans, rows) if annotator else np.full(len(spans["row"]), None, dtype=object)
        labelled = np.array([x is not None for x in spans["label"]], dtype=bool)
        spans["annotator"] = np.where(labelled, annotator.name if annotator else None, None)
        if self.file:
            f = self.file.spans(rows)
            extra = {"row": np.array([x[0] for x in f], np.int64), "char_start": np.array([x[1] for x in f], np.int64),
                     "char_end": np.array([x[2] for x in f], np.int64), "text": np.array([x[3] for x in f], dtype=object),
                     "entity_type": np.full(len(f), "entity", dtype=object), "extractor": np.full(len(f), "file", dtype=object),
                     "label": np.array([x[4] for x in f], dtype=object), "annotator": np.full(len(f), "file", dtype=object)}
            spans = {k: np.concatenate([spans[k], extra[k]]) for k in spans}
        order = np.lexsort((spans["char_end"], spans["char_start"], spans["row"]))
        return {k: v[order] for k, v in spans.items()}

    def _ccp(self, tokens: pa.Table, models: list[str], rids: list[str], lengths, g_first, g_last) -> np.ndarray:
        k_col = tokens.column("topk_ids")
        if tokens.num_rows == 0 or pc.max(pc.list_value_length(k_col)).as_py() in (None, 0):
            return np.full(len(g_first), np.nan)  # no alternatives were kept: CCP is undefined
        k = pc.max(pc.list_value_length(k_col)).as_py()
        top_ids = pc.list_flatten(k_col).to_numpy().reshape(-1, k)
        top_lp = pc.list_flatten(tokens.column("topk_logprobs")).to_numpy().reshape(-1, k)
        chosen = tokens.column("token_id").to_numpy()
        tok_model = np.repeat(np.array(models, dtype=object), lengths)
        word = np.ones(len(chosen))
        judge = JUDGES[self.cfg.judge]()
        for m in set(models):  # one tokenizer per model
            sel = tok_model == m
            rel = judge.relation(chosen[sel], top_ids[sel], load_tokenizer(m))
            word[sel] = ccp_word(chosen[sel], tokens.column("logprob").to_numpy()[sel], top_ids[sel], top_lp[sel], rel)
        _, _, log_sum = segment_stats(np.log(np.maximum(word, 1e-300)), g_first, g_last)
        return np.exp(log_sum)
