"""Ground truth for entity spans: supported, not_supported or unverifiable.

  kb    the bios world's knowledge base (exact: the annotation the paper buys with web
        search): a span of a KB field (birth_year, city, occupation, employer) is
        supported when it equals the person's value, else not_supported; the person's own
        name is supported; anything else is unverifiable. Rollouts of other worlds get
        no label.
  file  the user's own verdicts, JSON lines in the paper's format:
        {"rollout_id": …, "span": "Vassport", "label": "Not Supported", "index": 31}
        labels "Supported" / "Not Supported" / "Insufficient Information" (or ours);
        `index` is the character offset into the completion. The file's spans are
        the spans (extractor `file`); each is checked against the completion text.

A new annotator is one `Annotator` subclass registered in `ANNOTATORS`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from tokenmill.errors import TokenmillError

SUPPORTED, NOT_SUPPORTED, UNVERIFIABLE = "supported", "not_supported", "unverifiable"
_PAPER_LABELS = {"supported": SUPPORTED, "not supported": NOT_SUPPORTED, "not_supported": NOT_SUPPORTED,
                 "insufficient information": UNVERIFIABLE, "unverifiable": UNVERIFIABLE}


class Annotator(ABC):
    name: str = ""

    @abstractmethod
    def annotate(self, spans: dict[str, np.ndarray], rows: dict) -> np.ndarray:
        """A label (or None) per span; `rows` holds per-rollout columns (rollout_id,
        prompt, completion) that `spans["row"]` indexes."""


class KBAnnotator(Annotator):
    name = "kb"

    def annotate(self, spans, rows):
        from tokenmill.sources.worlds.bios import ATTRIBUTES

        labels = np.full(len(spans["row"]), None, dtype=object)
        for k, (r, text, kind) in enumerate(zip(spans["row"], spans["text"], spans["entity_type"])):  # per span
            prompt = rows["prompt"][r]
            if prompt is None or prompt.world != "bios":
                continue
            person = prompt.meta["person"]
            if kind in ATTRIBUTES:
                labels[k] = SUPPORTED if text == str(person[kind]) else NOT_SUPPORTED
            elif text == person["name"]:
                labels[k] = SUPPORTED
            else:
                labels[k] = UNVERIFIABLE
        return labels


class FileAnnotator(Annotator):
    name = "file"

    def __init__(self, path: str | Path):
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
                rid, span, label, index = rec["rollout_id"], rec["span"], str(rec["label"]), int(rec["index"])
            except (ValueError, KeyError, TypeError) as e:
                raise TokenmillError(f"{where}: not a span verdict ({e})",
                                     fix='each line: {"rollout_id": …, "span": …, "label": "Supported", "index": 0}') from None
            if label.strip().lower() not in _PAPER_LABELS:
                raise TokenmillError(f"{where}: unknown label {label!r}",
                                     fix="use Supported, Not Supported or Insufficient Information")
            self.by_rollout.setdefault(rid, []).append((index, index + len(span), span, _PAPER_LABELS[label.strip().lower()]))

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
