"""Only the viewer's user can drive it: Host header, token, bounded queries, filters that
cannot leave their run, 400s for malformed parameters — as raw HTTP requests an attacker's
page or script would send (the browser side is in test_viewer_browser.py)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import quote

import pytest

from tokenmill.report.viewer import TOKEN_HEADER, ViewerServer
from tokenmill.storage.lake import Lake


@pytest.fixture
def served(arith_lake):
    servers = []

    def start(**kw) -> ViewerServer:
        server = ViewerServer(Lake(str(arith_lake)), "127.0.0.1", 0, **kw)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def request(server: ViewerServer, path: str, token: str | None = "", host: str | None = None,
            headers: dict | None = None):
    """(status, body as JSON or text) of GET `path`; token "" means the server's own."""
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = {"Host": host or f"127.0.0.1:{port}", **(headers or {})}
    if token is not None:
        hdrs[TOKEN_HEADER] = token or server.token
    conn.request("GET", path, headers=hdrs)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")


def test_a_foreign_host_header_is_refused(served):
    server = served()
    port = server.server_address[1]
    for host in (f"rebind.attacker.test:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"localhost.evil:{port}"):
        status, body = request(server, "/api/runs", host=host)
        assert status == 403 and "is not this server's address" in body["error"], host
        assert server.token not in body["error"]  # a rebinding page may read this answer
    assert request(server, "/api/runs")[0] == 200
    assert request(server, "/api/runs", host=f"localhost:{port}")[0] == 200


def test_every_api_request_needs_the_token(served):
    server = served()
    for token in (None, "wrong", server.token[:-1]):
        status, body = request(server, "/api/rollouts?run=r1", token=token)
        assert status == 403 and "X-Tokenmill-Token" in body["error"]
    # the page itself needs it too (in the URL, then a cookie); a cookie alone opens no API
    assert request(server, "/", token=None)[0] == 403
    assert request(server, f"/?token={server.token}", token=None)[0] == 200
    assert request(server, "/", token=None, headers={"Cookie": f"tokenmill_token={server.token}"})[0] == 200
    assert request(server, "/api/runs", token=None, headers={"Cookie": f"tokenmill_token={server.token}"})[0] == 403


def test_a_blind_cross_site_request_runs_no_query(served, monkeypatch):
    server = served()
    ran = []
    monkeypatch.setattr(ViewerServer, "_answer", lambda self, *a: ran.append(a) or {})
    status, _ = request(server, "/api/rollouts?run=r1&where=" + quote("reward < 1"), token=None,
                        headers={"Origin": "http://attacker.test", "Referer": "http://attacker.test/"})
    assert status == 403 and ran == []


def test_a_filter_cannot_widen_its_page_to_other_runs(served, copy_lake):
    from conftest import make_run

    make_run(str(copy_lake), run_id="other", samples=1)
    server = ViewerServer(Lake(str(copy_lake)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        total = request(server, "/api/rollouts?run=r1")[1]["total"]
        for where in ("1=1) UNION ALL BY NAME SELECT * FROM rollouts WHERE (1=1",
                      "1=1) UNION ALL SELECT * FROM rollouts WHERE (1=1",
                      "true) OR (run_id <> 'r1'",
                      "run_id = 'other'",
                      "1=1) --"):
            status, body = request(server, "/api/rollouts?run=r1&limit=500&where=" + quote(where))
            if status == 200:
                assert body["total"] <= total and {r["rollout_id"] for r in body["rows"]} <= _ids(server, "r1"), where
            else:
                assert status == 400 and "not a WHERE expression" in body["error"], where
        assert request(server, "/api/rollouts?run=r1&where=" + quote("1=1) UNION ALL BY NAME SELECT * FROM rollouts WHERE (1=1"))[0] == 400
        # a subquery may filter, the page still holds the run's rows only
        status, body = request(server, "/api/rollouts?run=r1&where=" + quote("rollout_id IN (SELECT rollout_id FROM rollouts)"))
        assert status == 200 and body["total"] == total
    finally:
        server.shutdown()
        server.server_close()


def _ids(server, run) -> set[str]:
    return {r["rollout_id"] for r in request(server, f"/api/rollouts?run={run}&limit=500")[1]["rows"]}


def test_malformed_parameters_are_400_with_a_message(served):
    server = served()
    for path, needle in (("/api/rollouts?run=r1&offset=abc", "offset='abc' is not an integer"),
                         ("/api/rollouts?run=r1&offset=-1", "offset=-1 is out of range"),
                         ("/api/rollouts?run=r1&limit=0", "limit=0 is out of range"),
                         ("/api/rollouts?run=r1&limit=99999", "limit=99999 is out of range"),
                         ("/api/rollouts", "missing query parameter 'run'"),
                         ("/api/rollout?run=r1", "missing query parameter 'id'"),
                         ("/api/nothing", "unknown request")):
        status, body = request(server, path)
        assert status == 400 and needle in body["error"], (path, body)
    assert request(server, "/api/runs")[0] == 200  # the server is still up


def test_a_long_query_is_stopped_and_the_server_stays_responsive(served):
    server = served(query_timeout_s=0.3)
    # quadratic string work per row (two-row DP: bounded memory)
    slow = "levenshtein(repeat(completion, 150), reverse(repeat(completion, 150))) >= 0"  # ~5 s uninterrupted
    start = time.monotonic()
    status, body = request(server, "/api/rollouts?run=r1&where=" + quote(slow))
    took = time.monotonic() - start
    assert status == 503 and "was stopped" in body["error"], body
    assert took < 5, took
    start = time.monotonic()
    assert request(server, "/api/rollouts?run=r1")[0] == 200
    assert time.monotonic() - start < 5


def test_a_corrupt_lake_file_is_a_400_naming_it(copy_lake):
    shard = sorted((copy_lake / "tokens").rglob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    for i in range(4, 40):  # the first page header; the footer stays intact
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    server = ViewerServer(Lake(str(copy_lake)), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rid = request(server, "/api/rollouts?run=r1&limit=1")[1]["rows"][0]["rollout_id"]
        status, body = request(server, f"/api/rollout?run=r1&id={rid}")
        assert status == 400 and str(shard) in body["error"] and "tokenmill check --deep" in body["error"], body
    finally:
        server.shutdown()
        server.server_close()
