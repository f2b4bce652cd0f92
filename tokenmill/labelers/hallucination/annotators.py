"""Ground truth for entity spans: supported, not_supported or unverifiable.

  kb    a knowledge-base world's own judge (exact: the annotation the paper buys with
        web search): each span goes to `world.judge(prompt, entity_type, text)` of its
        rollout's world. bios: a KB field (birth_year, city, occupation, employer) is
        supported when it equals the person's value, else not_supported; countries: a
        capital, currency, language, region or neighbour is supported when it matches
        the country's value or an alias (accents, case, "the" ignored), not_supported
        when it states another, unverifiable for a non-answer. A generic span (name,
        number, …) is supported when it equals any KB value of that person or country
        (the person's own name among them), else unverifiable. Rollouts of worlds
        without a `judge` get no label.
  file  the user's own verdicts, JSON lines in the paper's format:
        {"rollout_id": …, "span": "Vassport", "label": "Not Supported", "index": 31}
        labels "Supported" / "Not Supported" / "Insufficient Information", the short
        S / NS / N/A, or ours; `index` is the character offset into the completion. As
        in obalcells/hallucination_probes, "Insufficient Information" counts as a
        hallucination (not_supported; `insufficient="unverifiable"`: tokenmill's variant,
        left out of training), and a record with a null label or index (an entity the
        annotation could not place, which the upstream pipeline emits) is skipped. The
        file's spans are the spans (extractor `file`); each is checked against the
        completion text.

A new annotator is one `Annotator` subclass registered in `ANNOTATORS`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from tokenmill.errors import TokenmillError

SUPPORTED, NOT_SUPPORTED, UNVERIFIABLE = "supported", "not_supported", "unverifiable"
INSUFFICIENT = "insufficient"  # the paper's "Insufficient Information", mapped by FileAnnotator(insufficient=…)
_PAPER_LABELS = {"supported": SUPPORTED, "s": SUPPORTED, "not supported": NOT_SUPPORTED, "ns": NOT_SUPPORTED,
                 "not_supported": NOT_SUPPORTED, "insufficient information": INSUFFICIENT, "n/a": INSUFFICIENT,
                 "unverifiable": UNVERIFIABLE}


class Annotator(ABC):
    name: str = ""

    @abstractmethod
    def annotate(self, spans: dict[str, np.ndarray], rows: dict) -> np.ndarray:
        """A label (or None) per span; `rows` holds per-rollout columns (rollout_id,
        prompt, completion) that `spans["row"]` indexes."""


class KBAnnotator(Annotator):
    name = "kb"

    def annotate(self, spans, rows):
        from tokenmill.sources.worlds import world_with

        labels = np.full(len(spans["row"]), None, dtype=object)
        for k, (r, text, kind) in enumerate(zip(spans["row"], spans["text"], spans["entity_type"])):  # per span
            prompt = rows["prompt"][r]
            world = world_with(prompt.world, "judge") if prompt is not None else None
            if world is not None:
                labels[k] = world.judge(prompt, kind, text)
        return labels


class FileAnnotator(Annotator):
    name = "file"

    def __init__(self, path: str | Path, insufficient: str = NOT_SUPPORTED):
        if insufficient not in (NOT_SUPPORTED, UNVERIFIABLE):
            raise ValueError("insufficient must be not_supported or unverifiable")
        self.path = Path(path)
        self.by_rollout: dict[str, list[tuple[int, int, str, str]]] = {}
        if not self.path.exists():
            raise TokenmillError(f"span verdict file {self.path} does not exist", fix="give a JSONL file of span verdicts")
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.path}:{n}"
            try:
                rec = json.loads(line)
                if {"label", "index"} <= rec.keys() and (rec["label"] is None or rec["index"] is None):
                    # not placed upstream: no verdict to use
                    continue
                rid, span, label, index = rec["rollout_id"], rec["span"], str(rec["label"]), int(rec["index"])
            except (ValueError, KeyError, TypeError) as e:
                raise TokenmillError(f"{where}: not a span verdict ({e})",
                                     fix='each line: {"rollout_id": …, "span": …, "label": "Supported", "index": 0}') from None
            if label.strip().lower() not in _PAPER_LABELS:
                raise TokenmillError(f"{where}: unknown label {label!r}",
                                     fix="use Supported, Not Supported or Insufficient Information (or S, NS, N/A)")
            verdict = _PAPER_LABELS[label.strip().lower()]
            verdict = insufficient if verdict == INSUFFICIENT else verdict
            self.by_rollout.setdefault(rid, []).append((index, index + len(span), span, verdict))

    def spans(self, rows: dict) -> list[tuple[int, int, int, str, str]]:
        """[(row, char_start, char_end, text, label)] of the file's verdicts for these rollouts,
        each checked against the completion."""
        out = []
        for r, (rid, text) in enumerate(zip(rows["rollout_id"], rows["completion"])):
            for a, b, span, label in self.by_rollout.get(rid, []):
                if text[a:b] != span:
                    raise TokenmillError(f"{self.path}: rollout {rid}: span {span!r} is not at index {a} "
                                         f"(the completion has {text[a:b]!r} there)",
                                         fix="index is the character offset of the span in rollouts.completion")
                out.append((r, a, b, span, label))
        return out

    def annotate(self, spans, rows):
        return spans["label"]  # the file's spans carry their verdicts


ANNOTATORS = {"kb": KBAnnotator}
