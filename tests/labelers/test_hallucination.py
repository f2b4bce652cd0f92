import json
import shutil

import pyarrow as pa
import pytest

from tokenmill.config import HallucinationConfig
from tokenmill.errors import TokenmillError
from tokenmill.sources.worlds import get_world
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.labelers.hallucination.annotators import FileAnnotator, KBAnnotator
from tokenmill.labelers.hallucination.labeler import HallucinationLabeler
from tokenmill.labelers.hallucination.spans import extract, get_extractor


def _bios_prompt():
    return get_world("bios").prompts(1, split="train")[0]


def test_kb_annotator_on_right_and_wrong_facts():
    prompt = _bios_prompt()
    person = prompt.meta["person"]
    wrong_city = next(c for c in ("Vassport", "Kestrin") if c != person["city"])
    text = (f"{person['name']} was born in {person['birth_year']} in {wrong_city}. "
            f"{person['name'].split()[0]} works as a {person['occupation']} at {person['employer']}.")
    spans = extract([text], [get_extractor("kb"), get_extractor("names")])
    labels = KBAnnotator().annotate(spans, {"prompt": [prompt]})
    got = {(t, k): lab for t, k, lab in zip(spans["text"], spans["entity_type"], labels)}
    assert got[(str(person["birth_year"]), "birth_year")] == "supported"
    assert got[(wrong_city, "city")] == "not_supported"
    assert got[(person["occupation"], "occupation")] == "supported"
    assert got[(person["employer"], "employer")] == "supported"
    assert got[(person["name"], "name")] == "supported"
    # a span the knowledge base says nothing about
    other = extract(["He met Arden Vale."], [get_extractor("names")])
    assert KBAnnotator().annotate(other, {"prompt": [prompt]}).tolist() == ["unverifiable"]
    # rollouts of other worlds get no label
    arith = get_world("arithmetic").prompts(1)[0]
    assert KBAnnotator().annotate(extract(["1+2=3"], [get_extractor("kb")]), {"prompt": [arith]}).tolist() == []


def test_file_annotator_reads_the_papers_format_and_checks_each_span(tmp_path):
    path = tmp_path / "verdicts.jsonl"
    path.write_text(json.dumps({"rollout_id": "r1", "span": "Vassport", "label": "Not Supported", "index": 5}) + "\n"
                    + json.dumps({"rollout_id": "r1", "span": "1962", "label": "Supported", "index": 0}) + "\n")
    ann = FileAnnotator(path)
    spans = ann.spans({"rollout_id": ["r1", "r2"], "completion": ["1962 Vassport.", "nothing"]})
    assert spans == [(0, 5, 13, "Vassport", "not_supported"), (0, 0, 4, "1962", "supported")]
    with pytest.raises(TokenmillError, match="is not at index 5"):
        ann.spans({"rollout_id": ["r1"], "completion": ["1962 Kestrin."]})
    # upstream's other records: short labels, "Insufficient Information" (a hallucination there), unplaced entities
    path.write_text("\n".join(json.dumps(r) for r in [
        {"rollout_id": "r1", "span": "1962", "label": "S", "index": 0},
        {"rollout_id": "r1", "span": "Vassport", "label": "Insufficient Information", "index": 5},
        {"rollout_id": "r1", "span": "Kestrin", "label": None, "index": None}]) + "\n")
    assert FileAnnotator(path).spans({"rollout_id": ["r1"], "completion": ["1962 Vassport."]}) == [
        (0, 0, 4, "1962", "supported"), (0, 5, 13, "Vassport", "not_supported")]
    assert FileAnnotator(path, insufficient="unverifiable").spans(
        {"rollout_id": ["r1"], "completion": ["1962 Vassport."]})[1][4] == "unverifiable"
    path.write_text('{"rollout_id": "r1", "span": "x", "label": "Maybe", "index": 0}\n')
    with pytest.raises(TokenmillError, match="verdicts.jsonl:1: unknown label 'Maybe'"):
        FileAnnotator(path)
    path.write_text('{"rollout_id": "r1", "span": "x"}\n')
    with pytest.raises(TokenmillError, match="not a span verdict"):
        FileAnnotator(path)


def test_spans_cover_their_tokens_and_carry_scores(bios_lake):
    con = connect(Lake(str(bios_lake)))
    rows = con.execute("""
        SELECT s.rollout_id, s.span_id, s.text, s.label, s.min_prob, s.mean_prob, s.ccp, s.mean_entropy, s.consistency,
               string_agg(substr(r.completion, t.char_start + 1, t.char_end - t.char_start), '' ORDER BY t.pos) AS covered,
               min(exp(t.logprob)) AS min_p
        FROM hallucination_spans s JOIN rollouts r USING (run_id, rollout_id)
        JOIN tokens t ON t.run_id = s.run_id AND t.rollout_id = s.rollout_id AND t.pos BETWEEN s.start_pos AND s.end_pos
        GROUP BY ALL""").fetchall()
    assert len(rows) > 50
    for _, _, text, label, min_prob, mean_prob, ccp, ent, cons, covered, min_p in rows:
        assert text in covered and label in ("supported", "not_supported", "unverifiable")
        assert min_prob == pytest.approx(min_p, rel=1e-5) and min_prob <= mean_prob + 1e-6
        assert 0 <= ccp <= 1 and ent >= 0 and 0 <= cons <= 1
    labels = dict(con.execute("SELECT label, count(*) FROM hallucination_spans GROUP BY 1").fetchall())
    assert labels["supported"] > 0 and labels["not_supported"] > 0
    # hallucinated facts are less certain on average: the scores mean something
    means = dict(con.execute("SELECT label, avg(min_prob) FROM hallucination_spans GROUP BY 1").fetchall())
    assert means["not_supported"] < means["supported"]


def test_token_view_labels_span_tokens_and_ignores_the_rest(bios_lake):
    con = connect(Lake(str(bios_lake)))
    bad = con.execute("""
        SELECT count(*) FROM hallucination_tokens v
        WHERE v.label != coalesce((SELECT max(CASE s.label WHEN 'not_supported' THEN 1 WHEN 'supported' THEN 0 END)
                                   FROM hallucination_spans s WHERE s.rollout_id = v.rollout_id
                                   AND v.pos BETWEEN s.start_pos AND s.end_pos), -100)""").fetchone()[0]
    n_tokens = con.execute("SELECT count(*) FROM tokens").fetchone()[0]
    n_view = con.execute("SELECT count(*) FROM hallucination_tokens").fetchone()[0]
    assert bad == 0 and 0 < n_view <= n_tokens
    assert {lab for (lab,) in con.execute("SELECT DISTINCT label FROM hallucination_tokens").fetchall()} == {-100, 0, 1}


def test_relabelling_adds_nothing_and_other_settings_add_rows(bios_lake, tmp_path):
    dest = tmp_path / "lake"
    shutil.copytree(bios_lake, dest)
    lake = Lake(str(dest))
    before = lake.read("hallucination_spans", "b").num_rows
    assert all(HallucinationLabeler().label_shard(lake, "b", s)["hallucination_spans"] == 0 for s in lake.files("rollouts", "b"))
    generic = HallucinationLabeler(HallucinationConfig(extractors=["numbers", "names"], annotator="none"))
    added = sum(generic.label_shard(lake, "b", s)["hallucination_spans"] for s in lake.files("rollouts", "b"))
    t = lake.read("hallucination_spans", "b")
    assert added > 0 and t.num_rows == before + added
    assert set(t.filter(pa.compute.field("extractor") == "numbers").column("label").to_pylist()) == {None}


def test_unknown_extractor_fails_before_any_work():
    with pytest.raises(TokenmillError, match="unknown span extractor"):
        HallucinationLabeler(HallucinationConfig(extractors=["kb", "places"]))
