"""The viewer's queries and its JSON server, without a browser (tests/report/test_viewer_browser.py
drives the page)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.errors import TokenmillError
from tokenmill.report import token_view as V
from tokenmill.report.viewer import ViewerServer, check_loopback, page
from tokenmill.schema import HALLUCINATION_SPANS
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.labelers.base import provenance


def _incorrect(lake: Lake) -> dict:
    return lake.read("rollouts", "r1").filter(pa.compute.equal(pa.compute.field("verdict"), "incorrect")).to_pylist()[0]


def test_detail_carries_each_label_per_token(labelled):
    lake = labelled
    bad = _incorrect(lake)
    con = connect(lake, read_only=True)
    d = V.rollout_detail(con, "r1", bad["rollout_id"])
    toks = lake.read("tokens", "r1").filter(pa.compute.equal(pa.compute.field("rollout_id"), bad["rollout_id"]))
    toks = toks.sort_by("pos")
    n = toks.num_rows
    assert d["tokens"]["pos"] == list(range(n))
    assert d["tokens"]["token_id"] == toks.column("token_id").to_pylist()
    # the fixture's critical weight is pos / 10 and its grpo reward 0.5 on every token
    assert d["labels"]["critical_weight"] == pytest.approx([p / 10 for p in range(n)], abs=1e-4)
    assert d["labels"]["grpo"] == pytest.approx([0.5] * n)
    assert d["labels"]["logprob"] == pytest.approx(toks.column("logprob").to_pylist(), abs=1e-5)
    assert d["labels"]["routing"] == [None] * n and d["labels"]["ast_category"] == [None] * n
    assert {"logprob", "critical_weight", "grpo"} <= set(d["present"]) and "routing" not in d["present"]
    # the token texts are cut from the completion by the offsets: together they are the completion
    assert "".join(d["tokens"]["text"]) == bad["completion"]
    assert d["completion_token_ids"] == bad["completion_token_ids"]


def _spans(lake: Lake, rollout_id: str, rows: list[tuple[int, int, str | None, float]]) -> None:
    n = len(rows)
    lake.commit("hallucination_spans", "r1", pa.table({
        "rollout_id": [rollout_id] * n, "span_id": pa.array(range(n), pa.int32()),
        "start_pos": pa.array([r[0] for r in rows], pa.int32()), "end_pos": pa.array([r[1] for r in rows], pa.int32()),
        "char_start": pa.array([0] * n, pa.int32()), "char_end": pa.array([1] * n, pa.int32()), "text": ["x"] * n,
        "entity_type": ["number"] * n, "label": [r[2] for r in rows], "min_prob": pa.array([r[3] for r in rows], pa.float32()),
        "mean_prob": pa.nulls(n, pa.float32()), "mean_entropy": pa.nulls(n, pa.float32()), "ccp": pa.nulls(n, pa.float32()),
        "consistency": pa.nulls(n, pa.float32()), "extractor": ["numbers"] * n, "annotator": ["hand"] * n,
        "model": ["tiny-small"] * n, **provenance(n, "hallucination", "1", {}, {}),
    }, schema=HALLUCINATION_SPANS.schema))


def test_overlapping_spans_take_the_most_severe_label_and_the_highest_risk(copy_lake):
    lake = Lake(str(copy_lake))
    rid = _incorrect(lake)["rollout_id"]
    # tokens 0-2 supported (min p 0.9), 2-3 not supported (min p 0.2), 5 unlabelled (min p 0.5)
    _spans(lake, rid, [(0, 2, "supported", 0.9), (2, 3, "not_supported", 0.2), (5, 5, None, 0.5)])
    d = V.rollout_detail(connect(lake, read_only=True), "r1", rid)
    assert d["labels"]["halluc_label"][:7] == ["supported", "supported", "not_supported", "not_supported", None,
                                                "unlabelled", None]
    assert d["labels"]["halluc_risk"][:7] == pytest.approx([0.1, 0.1, 0.8, 0.8, None, 0.5, None], abs=1e-4)
    assert [(s["start_pos"], s["end_pos"], s["label"]) for s in d["spans"]] == [
        (0, 2, "supported"), (2, 3, "not_supported"), (5, 5, "unlabelled")]


def test_rollout_pages_filter_search_and_stay_in_their_run(arith_lake):
    con = connect(Lake(str(arith_lake)), read_only=True)
    everything = V.list_rollouts(con, "r1", limit=500)
    assert everything["total"] == 32 and len(everything["rows"]) == 32
    first, second = V.list_rollouts(con, "r1", limit=10), V.list_rollouts(con, "r1", offset=10, limit=10)
    assert [r["rollout_id"] for r in first["rows"] + second["rows"]] == [r["rollout_id"] for r in everything["rows"][:20]]
    wrong = V.list_rollouts(con, "r1", where="verdict = 'incorrect' AND num_tokens > 5", limit=500)
    assert wrong["total"] == sum(r["verdict"] == "incorrect" and r["num_tokens"] > 5 for r in everything["rows"])
    rid = everything["rows"][3]["rollout_id"]
    assert [r["rollout_id"] for r in V.list_rollouts(con, "r1", search=rid[:10])["rows"]] == [rid]
    # a filter that closes the parenthesis still cannot reach another run
    assert V.list_rollouts(con, "r1", where="1=1) OR (1=1")["total"] == 32
    assert V.list_rollouts(con, "other", where="1=1) OR (1=1")["total"] == 0
    sib = V.siblings(con, "r1", rid)
    prompt = everything["rows"][3]["prompt_id"]
    assert len(sib) == 3 and all(s["prompt_id"] == prompt and s["rollout_id"] != rid for s in sib)


@pytest.mark.parametrize("where", ["nope > 1", "1=1; DROP TABLE rollouts", "rollout_id IN (SELECT * FROM read_csv('/etc/passwd'))"])
def test_a_bad_filter_is_one_error_saying_what_to_write(arith_lake, where):
    con = connect(Lake(str(arith_lake)), read_only=True)
    with pytest.raises(TokenmillError, match="is not a WHERE expression over rollouts.*world = 'bios'"):
        V.list_rollouts(con, "r1", where=where)


def test_an_unknown_rollout_is_an_error_naming_it(arith_lake):
    with pytest.raises(TokenmillError, match="rollout nope is not in run r1"):
        V.rollout_detail(connect(Lake(str(arith_lake)), read_only=True), "r1", "nope")


def test_embedded_data_cannot_close_its_script_element():
    html = page({"text": "</script><script>alert(1)</script><!--"})
    body = html.split('<script type="application/json" id="tm-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(body) == {"text": "</script><script>alert(1)</script><!--"}


def test_server_binds_loopback_only():
    check_loopback("127.0.0.1"), check_loopback("::1"), check_loopback("localhost")
    with pytest.raises(TokenmillError, match="binds loopback only"):
        check_loopback("0.0.0.0")


def _get(url: str, token: str | None = None):
    req = urllib.request.Request(url, headers={"X-Tokenmill-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_server_answers_pages_as_json_and_errors_as_400(arith_lake):
    server = ViewerServer(Lake(str(arith_lake)), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, ctype, body = _get(server.url)
        assert status == 200 and ctype.startswith("text/html") and b'id="tm-data">null</script>' in body
        base, tok = server.url.split("?")[0], server.token
        assert json.loads(_get(base + "api/runs", tok)[2])[0]["run"] == "r1"
        page1 = json.loads(_get(base + "api/rollouts?run=r1&limit=5", tok)[2])
        assert page1["total"] == 32 and len(page1["rows"]) == 5
        rid = page1["rows"][0]["rollout_id"]
        detail = json.loads(_get(base + f"api/rollout?run=r1&id={rid}", tok)[2])
        assert detail["rollout"]["rollout_id"] == rid and len(detail["tokens"]["pos"]) == detail["rollout"]["num_tokens"]
        status, _, body = _get(base + "api/rollouts?run=r1&where=nope%20%3E%201", tok)
        assert status == 400 and "not a WHERE expression" in json.loads(body)["error"]
        assert _get(base + "api/rollout?run=r1", tok)[0] == 400
        assert _get(base + "nothing-here", tok)[0] == 404
        assert {lb["name"] for lb in json.loads(_get(base + "api/labels", tok)[2])} == set(V.LABEL_BY_NAME)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_label_colour_rules_are_complete():
    for lb in V.LABELS:
        assert lb.kind in ("sequential", "diverging", "categorical")
        assert (lb.kind == "categorical") == bool(lb.categories), lb.name
    assert np.array_equal(sorted(V.LABEL_BY_NAME["routing"].categories), ["divergent", "identical", "neutral", "undecidable"])


def test_siblings_include_the_same_prompt_in_other_runs_after_this_runs(copy_lake):
    from conftest import make_run

    make_run(str(copy_lake), run_id="greedy", samples=1, temperature=0.0)  # the same prompts, decoded greedily
    con = connect(Lake(str(copy_lake)), read_only=True)
    me = V.list_rollouts(con, "r1", limit=1)["rows"][0]
    sib = V.siblings(con, "r1", me["rollout_id"])
    assert [s["run_id"] for s in sib] == ["r1"] * 3 + ["greedy"]
    assert all(s["prompt_id"] == me["prompt_id"] for s in sib)
    assert not any(s["run_id"] == "r1" and s["rollout_id"] == me["rollout_id"] for s in sib)
    # from the other side: the four samples of r1
    back = V.siblings(con, "greedy", sib[-1]["rollout_id"])
    assert sorted(s["rollout_id"] for s in back) == sorted([me["rollout_id"]] + [s["rollout_id"] for s in sib[:3]])
