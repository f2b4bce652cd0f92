"""Deterministic ids shared by every table (see docs/ARCHITECTURE.md, "Keys").

`prompt_id`  = hash(source name, normalized prompt text)
`rollout_id` = hash(prompt_id, model id, sampling params, seed, sample index[, extra])
  where `extra` holds what else changes the sample — the engine when it is not `hf`, the
  prompt rendering (chat template, system prompt) when it is not the raw text — and is
  left out when empty, so work that had no such part keeps the id it always had.

Re-running the same work yields the same ids, which is what makes lake writes idempotent.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

ID_LEN = 16  # hex chars: 64 bits, collision-free for any lake this tool will see


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=ID_LEN // 2)
    for p in parts:
        b = p.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))  # length-prefix: ("ab","c") != ("a","bc")
        h.update(b)
    return h.hexdigest()


def normalize_prompt(text: str) -> str:
    """NFC, unified newlines, trailing whitespace stripped per line and at the end."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def prompt_id(source: str, text: str) -> str:
    return _digest("prompt", source, normalize_prompt(text))


def rollout_id(prompt_id_: str, model_id: str, sampling: dict, seed: int, sample_index: int,
               extra: dict | None = None) -> str:
    parts = ["rollout", prompt_id_, model_id, canonical_json(sampling), str(seed), str(sample_index)]
    if extra:
        parts.append(canonical_json(extra))
    return _digest(*parts)


def content_id(*parts: str) -> str:
    """Hash of arbitrary parts (shard names, file names, dataset hashes)."""
    return _digest(*parts)
