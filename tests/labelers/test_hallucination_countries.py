"""The hallucination labeler on countries rollouts: the world's own claims are the spans,
its judge the labels, each span on the tokens it overlaps; other worlds keep the generic
extractors and get no label."""

from __future__ import annotations

import re

import pyarrow as pa

from tokenmill.sources.worlds import get_world
from tokenmill.labelers.hallucination.annotators import KBAnnotator
from tokenmill.labelers.hallucination.labeler import HallucinationLabeler
from tokenmill.labelers.hallucination.spans import extract, extract_kb, get_extractor

FRANCE = ("France is located in Western Europe. The capital of France is Lyon. Its currency is the euro, "
          "and its official languages are French and Breton. France borders Spain, Italy and Portugal.")


def _france():
    world = get_world("countries")
    return next(p for p in world.prompts(len(world.kb), split="all") if p.meta["country"]["name"] == "France")


def _tokens(rid: str, text: str) -> list[dict]:
    """GPT-style tokens: each word with its leading blank, so spans start inside tokens."""
    return [{"rollout_id": rid, "pos": j, "token_id": j, "logprob": -0.1 * (j % 5), "entropy": 0.5, "topk_ids": [],
             "topk_logprobs": [], "char_start": m.start(), "char_end": m.end()}
            for j, m in enumerate(re.finditer(r"\s*\S+", text))]


def test_countries_spans_are_the_worlds_claims_labelled_by_its_judge():
    france, arith = _france(), get_world("arithmetic").prompts(1)[0]
    texts = {"r1": FRANCE, "r2": "3+4=7\nAnswer: 7"}
    prompts = {france.prompt_id: france, arith.prompt_id: arith}
    rollouts = pa.table({"rollout_id": ["r1", "r2"], "model": ["m", "m"],
                         "prompt_id": [france.prompt_id, arith.prompt_id], "completion": list(texts.values())})
    tokens = pa.Table.from_pylist(_tokens("r1", FRANCE) + _tokens("r2", texts["r2"]))
    out = HallucinationLabeler().label(rollouts, tokens, prompts).to_pylist()

    got = {(s["text"], s["entity_type"]): s["label"] for s in out if s["rollout_id"] == "r1"}
    assert got == {("Western Europe", "region"): "supported", ("Lyon", "capital"): "not_supported",
                   ("euro", "currency"): "supported", ("French", "language"): "supported",
                   ("Breton", "language"): "not_supported", ("Spain", "neighbour"): "supported",
                   ("Italy", "neighbour"): "supported", ("Portugal", "neighbour"): "not_supported"}
    toks = _tokens("r1", FRANCE)
    for s in (s for s in out if s["rollout_id"] == "r1"):
        assert FRANCE[s["char_start"]:s["char_end"]] == s["text"] and s["extractor"] == "kb" and s["annotator"] == "kb"
        covering = [t["pos"] for t in toks if t["char_start"] < s["char_end"] and t["char_end"] > s["char_start"]]
        assert (s["start_pos"], s["end_pos"]) == (covering[0], covering[-1])
    # the arithmetic rollout: generic extractors, no knowledge base, no label
    arith_spans = [s for s in out if s["rollout_id"] == "r2"]
    assert arith_spans and {s["extractor"] for s in arith_spans} <= {"numbers", "dates", "names", "titles"}
    assert {s["label"] for s in arith_spans} == {None}


def test_generic_spans_of_a_kb_world_are_supported_only_by_a_kb_value():
    france = _france()
    text = "Paris is lovely and Madrid too."
    spans = extract([text], [get_extractor("names")])
    assert dict(zip(spans["text"], KBAnnotator().annotate(spans, {"prompt": [france]}))) == {
        "Paris": "supported", "Madrid": "unverifiable"}


def test_extract_kb_reads_each_text_with_its_own_world():
    bios, countries = get_world("bios"), get_world("countries")
    person = bios.prompts(1, split="train")[0].meta["person"]
    bio = f"{person['name']} was born in {person['birth_year']} in Vassport."
    out = extract_kb([bio, "Capital: Paris", "Capital: Paris"], [bios, countries, None])
    assert out["row"].tolist() == [0, 0, 1] and out["entity_type"].tolist() == ["birth_year", "city", "capital"]
    assert set(out["extractor"]) == {"kb"}
