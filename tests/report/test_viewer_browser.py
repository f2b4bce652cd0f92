"""The token viewer in a real browser: headless Debian Chromium driven by Playwright,
against the real `tokenmill view` server (and its `--out` file) on a lake made by the
real `tokenmill demo`.

Screenshots land in the test's tmp dir, and in $TOKENMILL_SCREENSHOTS when it is set
(the README's screenshot and docs/img are made that way)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import _free_port

from tokenmill.report.token_view import LABELS
from tokenmill.storage.catalog import query
from tokenmill.storage.lake import Lake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REBIND = "rebind.attacker.test"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: `make install-test` installs it (apt-get install chromium)")
        pytest.skip("no chromium here: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # the attacker's DNS-rebinding name resolves to loopback in this browser
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", f"--host-resolver-rules=MAP {REBIND} 127.0.0.1"])
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    pages = []

    def make():
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = ctx.new_page()
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pages.append(ctx)
        return pg

    yield make
    for ctx in pages:
        ctx.close()


@pytest.fixture
def viewer(tmp_path):
    """Start the real `tokenmill view` on a lake; stopped by pid at teardown."""
    from tokenmill.serve import stop_process

    procs = []

    def start(lake: Path, run: str | None = None, *extra: str) -> str:
        """The URL the user opens: http://127.0.0.1:<port>/?token=<token>."""
        port, token = _free_port(), secrets.token_urlsafe(16)
        log = open(tmp_path / f"view-{port}.log", "wb")
        args = [str(Path(sys.executable).with_name("tokenmill")), "view", "--lake", str(lake), "--port", str(port),
                "--verbose", *extra]
        proc = subprocess.Popen(args + (["--run", run] if run else []), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "TOKENMILL_VIEW_TOKEN": token})
        procs.append(proc)
        base = f"http://127.0.0.1:{port}/"
        for _ in range(200):
            try:
                urllib.request.urlopen(urllib.request.Request(base + "api/runs", headers={"X-Tokenmill-Token": token}),
                                       timeout=2)
                return f"{base}?token={token}"
            except OSError:
                assert proc.poll() is None, (tmp_path / f"view-{port}.log").read_text()
                time.sleep(0.1)
        raise AssertionError("tokenmill view did not answer")

    yield start
    for proc in procs:
        stop_process(proc)


def _shot(pg, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    pg.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    if os.environ.get("TOKENMILL_SCREENSHOTS"):
        dest = Path(os.environ["TOKENMILL_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)
    return path


def _fresh_list(pg, action) -> None:
    """Do `action`, then wait until the page has loaded a new rollout list."""
    before = pg.evaluate("document.body.dataset.lists || '0'")
    action()
    pg.wait_for_function(f"(document.body.dataset.lists || '0') !== {before!r}")


def _filter(pg, where: str) -> None:
    pg.fill("#where", where)
    _fresh_list(pg, lambda: pg.press("#where", "Enter"))


def _pick(pg, index: int = 0) -> str:
    item = pg.locator("#rollouts li").nth(index)
    rid = item.get_attribute("data-id")
    item.click()
    pg.wait_for_selector(f".pane[data-rollout='{rid}'] .tok")
    return rid


def _label(pg, name: str) -> None:
    pg.select_option("#label", name)
    pg.wait_for_function(f"document.querySelector('#legend .title').textContent === {LABEL_TITLES[name]!r}")


LABEL_TITLES = {lb.name: lb.title for lb in LABELS}
# one label of each family, the run and rollouts that carry it in the demo lake
FAMILIES = [
    ("logprob", "demo", "world = 'arithmetic'"),
    ("critical_weight", "demo", "rollout_id IN (SELECT rollout_id FROM critical)"),
    ("routing", "demo-route", "rollout_id IN (SELECT rollout_id FROM routing WHERE label > 0)"),
    ("dpo", "demo", "world = 'arithmetic'"),
    ("halluc_label", "demo", "world = 'bios'"),
    ("ast_category", "demo", "world = 'code'"),
]


@pytest.mark.slow
def test_every_label_family_colours_tokens_with_a_legend(demo_lake, viewer, new_page, tmp_path):
    url = viewer(demo_lake, "demo")
    pg = new_page()
    pg.goto(url)
    pg.wait_for_selector("#rollouts li")
    assert pg.input_value("#run") == "demo"
    for name, run, where in FAMILIES:
        if pg.input_value("#run") != run:
            _fresh_list(pg, lambda: pg.select_option("#run", run))
        _filter(pg, where)
        rid = _pick(pg)
        _label(pg, name)
        coloured = pg.locator(".tokens .tok[data-value]")
        assert coloured.count() > 0, f"{name}: no token coloured on {rid}"
        # what the page shows is what the lake holds
        values = pg.evaluate("Array.from(document.querySelectorAll('.tokens .tok')).map(t => t.dataset.value ?? null)")
        expected = _lake_values(demo_lake, run, rid, name)
        assert len(values) == len(expected)
        for shown, want in zip(values, expected):
            if want is None:
                assert shown is None
            elif isinstance(want, str):
                assert shown == want
            else:
                assert float(shown) == pytest.approx(want, abs=1e-3)
        legend = pg.locator("#legend")
        assert legend.locator(".swatch").count() + legend.locator(".bar").count() >= 1
        _shot(pg, tmp_path, "viewer-" + name.replace(":", "-"))
    assert pg.errors == []


def _lake_values(lake: Path, run: str, rid: str, name: str) -> list:
    """The label per token straight from the lake, by a query independent of the viewer's."""
    lk = Lake(str(lake))
    n = query(lk, "SELECT count(*) AS n FROM tokens WHERE run_id = ? AND rollout_id = ?", [run, rid]).column("n")[0].as_py()
    sql = {
        "logprob": "SELECT pos, logprob AS v FROM tokens WHERE run_id = $run AND rollout_id = $rid",
        "critical_weight": "SELECT pos, avg(weight) AS v FROM critical WHERE run_id = $run AND rollout_id = $rid GROUP BY pos",
        "routing": "SELECT pos, ['identical', 'neutral', 'divergent'][max(label) + 1] AS v FROM routing "
                   "WHERE run_id = $run AND rollout_id = $rid GROUP BY pos",
        "dpo": "SELECT pos, avg(value) AS v FROM token_rewards WHERE run_id = $run AND rollout_id = $rid "
                      "AND kind = 'dpo' GROUP BY pos",
        "halluc_label": "SELECT pos, CASE max(label) WHEN 1 THEN 'not_supported' WHEN 0 THEN 'supported' END AS v "
                        "FROM hallucination_tokens WHERE run_id = $run AND rollout_id = $rid GROUP BY pos",
        "ast_category": "SELECT pos, any_value(category) AS v FROM ast_tokens WHERE run_id = $run AND rollout_id = $rid "
                        "AND node_id >= 0 GROUP BY pos",
    }[name]
    t = query(lk, sql, {"run": run, "rid": rid})
    out = [None] * n
    for p, v in zip(t.column("pos").to_pylist(), t.column("v").to_pylist()):
        out[p] = v
    return out


@pytest.mark.slow
def test_hovering_a_token_shows_its_id_text_logprob_and_labels(demo_lake, viewer, new_page, tmp_path):
    url = viewer(demo_lake)
    pg = new_page()
    pg.goto(url + "&run=demo")
    pg.wait_for_selector("#rollouts li")
    _filter(pg, "world = 'bios' AND model = 'tiny-small'")
    rid = _pick(pg)
    _label(pg, "halluc_label")
    spans = query(Lake(str(demo_lake)), "SELECT start_pos FROM hallucination_spans WHERE run_id = 'demo' AND "
                  "rollout_id = ? AND label IS NOT NULL ORDER BY start_pos LIMIT 1", [rid])
    pos = spans.column("start_pos")[0].as_py()
    tok = query(Lake(str(demo_lake)), "SELECT token_id, logprob FROM tokens WHERE run_id = 'demo' AND rollout_id = ? "
                "AND pos = ?", [rid, pos]).to_pylist()[0]
    pg.hover(f".tokens .tok[data-pos='{pos}']")
    pg.wait_for_selector(f"#tip[data-pos='{pos}']")
    rows = dict(pg.evaluate("Array.from(document.querySelectorAll('#tip tr')).map(r => [r.cells[0].textContent, r.cells[1].textContent])"))
    assert rows["pos"] == str(pos) and rows["token id"] == str(tok["token_id"])
    assert float(rows["logprob"]) == pytest.approx(tok["logprob"], abs=1e-3)
    assert rows["hallucination span label"] in ("supported", "not_supported", "unverifiable")
    assert "span" in rows and "entropy" in rows and "DPO implicit reward" in rows
    assert pg.locator(f".tokens .tok[data-pos='{pos}']").evaluate("t => t.classList.contains('span-start')")
    _shot(pg, tmp_path, "viewer-hover")
    assert pg.errors == []


@pytest.mark.slow
def test_compare_marks_the_first_differing_token(demo_lake, viewer, new_page, tmp_path):
    lk = Lake(str(demo_lake))
    # two rollouts of one prompt whose completions differ, from the lake
    rows = query(lk, "SELECT rollout_id, prompt_id, completion_token_ids FROM rollouts WHERE run_id = 'demo' "
                 "AND world = 'arithmetic' ORDER BY prompt_id, model, sample_index").to_pylist()
    pair = next((a, b) for a in rows for b in rows if a["prompt_id"] == b["prompt_id"] and a["rollout_id"] != b["rollout_id"]
                and a["completion_token_ids"] != b["completion_token_ids"])
    a, b = pair
    x, y = np.array(a["completion_token_ids"]), np.array(b["completion_token_ids"])
    m = min(len(x), len(y))
    diff = np.flatnonzero(x[:m] != y[:m])
    branch = int(diff[0]) if len(diff) else m
    url = viewer(demo_lake, "demo")
    pg = new_page()
    pg.goto(url)
    pg.wait_for_selector("#rollouts li")
    pg.select_option("#mode", "compare")
    _filter(pg, f"rollout_id = '{a['rollout_id']}'")
    _pick(pg)
    _pick_sibling(pg, "demo", b["rollout_id"])
    for side in ("a", "b"):
        marked = pg.locator(f".pane[data-side='{side}'] .tok.branch")
        assert marked.count() == 1 and marked.get_attribute("data-pos") == str(branch)
        assert pg.locator(f".pane[data-side='{side}'] .tok.shared").count() == branch
    assert f"token {branch}" in pg.text_content("#branch-note")
    _shot(pg, tmp_path, "viewer-compare")
    assert pg.errors == []


def _pick_sibling(pg, run: str, rid: str) -> None:
    pg.wait_for_selector("#sibling")
    option = pg.locator(f"#sibling option[data-run='{run}'][data-rollout='{rid}']")
    pg.select_option("#sibling", option.get_attribute("value"))
    pg.wait_for_selector(f".pane[data-side='b'][data-run='{run}'][data-rollout='{rid}'] .tok")


@pytest.mark.slow
def test_compare_pairs_a_rollout_with_one_of_the_same_prompt_in_another_run(copy_lake, viewer, new_page, tmp_path):
    from conftest import make_run

    make_run(str(copy_lake), run_id="greedy", samples=1, temperature=0.0)  # the arith run's prompts, decoded greedily
    lk = Lake(str(copy_lake))
    rows = query(lk, "SELECT run_id, rollout_id, prompt_id, completion_token_ids FROM rollouts ORDER BY run_id, rollout_id").to_pylist()
    a = next(r for r in rows if r["run_id"] == "r1")
    b = next(r for r in rows if r["run_id"] == "greedy" and r["prompt_id"] == a["prompt_id"])
    x, y = np.array(a["completion_token_ids"]), np.array(b["completion_token_ids"])
    m = min(len(x), len(y))
    diff = np.flatnonzero(x[:m] != y[:m])
    branch = int(diff[0]) if len(diff) else m
    out = tmp_path / "both.html"
    proc = subprocess.run([str(Path(sys.executable).with_name("tokenmill")), "view", "--lake", str(copy_lake),
                           "--out", str(out), "--limit", "100"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for url in (viewer(copy_lake, "r1"), out.as_uri()):
        pg = new_page()
        pg.goto(url)
        pg.wait_for_selector("#rollouts li")
        if pg.input_value("#run") != "r1":  # the file opens on its first run
            _fresh_list(pg, lambda: pg.select_option("#run", "r1"))
        pg.select_option("#mode", "compare")
        pg.fill("#search", a["rollout_id"][:16])
        _fresh_list(pg, lambda: pg.press("#search", "Enter"))
        _pick(pg)
        _pick_sibling(pg, "greedy", b["rollout_id"])
        assert pg.text_content(".pane[data-side='b'] .run-tag") == "run greedy"
        assert pg.locator(".pane[data-side='a'] .run-tag").count() == 0
        if branch < min(len(x), len(y)) or len(x) != len(y):
            assert pg.locator(".pane[data-side='b'] .tok.branch").get_attribute("data-pos") == str(branch)
        assert pg.errors == []


def _hostile_run(lake: Lake) -> str:
    """Run `x`: one rollout of r1 re-committed with markup in its completion, one token per piece."""
    src = lake.read("rollouts", "r1").slice(0, 1).to_pylist()[0]
    prompt = [p for p in lake.read("prompts", "r1").to_pylist() if p["prompt_id"] == src["prompt_id"]][0]
    pieces = ["<script>", "window.__pwned = 1", "</script>", '<img src=x onerror="window.__pwned = 2">', " & done"]
    text = "".join(pieces)
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    n = len(pieces)
    rid = "hostile00000000"
    lake.commit("prompts", "x", pa.Table.from_pylist([{k: v for k, v in prompt.items() if k != "run_id"}],
                                                     schema=lake_schema("prompts")))
    row = {k: v for k, v in src.items() if k != "run_id"}
    row.update(rollout_id=rid, completion=text, completion_token_ids=list(range(10, 10 + n)), num_tokens=n)
    lake.commit("rollouts", "x", pa.Table.from_pylist([row], schema=lake_schema("rollouts")))
    lake.commit("tokens", "x", pa.table({
        "rollout_id": [rid] * n, "pos": pa.array(range(n), pa.int32()), "token_id": pa.array(range(10, 10 + n), pa.int32()),
        "logprob": pa.array(np.linspace(-3, 0, n), pa.float32()), "entropy": pa.array(np.ones(n), pa.float32()),
        "topk_ids": pa.nulls(n, pa.list_(pa.int32())), "topk_logprobs": pa.nulls(n, pa.list_(pa.float32())),
        "char_start": pa.array(starts, pa.int32()), "char_end": pa.array(starts + [len(p) for p in pieces], pa.int32()),
    }, schema=lake_schema("tokens")))
    return rid


def lake_schema(name: str) -> pa.Schema:
    from tokenmill.schema import table_spec

    return table_spec(name).schema


def _assert_rendered_as_text(pg) -> None:
    texts = pg.evaluate("Array.from(document.querySelectorAll('.tokens .tok')).map(t => t.textContent)")
    assert texts[:3] == ["<script>", "window.__pwned = 1", "</script>"]
    assert pg.locator(".tokens script, .tokens img").count() == 0
    assert pg.evaluate("window.__pwned") is None


@pytest.mark.slow
def test_markup_in_tokens_renders_as_text_on_the_server_page_and_in_the_file(copy_lake, viewer, new_page, tmp_path):
    lake = Lake(str(copy_lake))
    rid = _hostile_run(lake)
    url = viewer(copy_lake, "x")
    pg = new_page()
    pg.goto(url)
    pg.wait_for_selector("#rollouts li")
    assert "<script>" in pg.text_content("#rollouts li .excerpt")
    _pick(pg)
    _assert_rendered_as_text(pg)
    _shot(pg, tmp_path, "viewer-escaped")
    assert pg.errors == []
    out = tmp_path / "view.html"
    subprocess.run([str(Path(sys.executable).with_name("tokenmill")), "view", "--lake", str(copy_lake), "--run", "x",
                    "--out", str(out)], check=True, capture_output=True)
    pg2 = new_page()
    pg2.goto(out.as_uri())
    pg2.wait_for_selector(f"#rollouts li[data-id='{rid}']")
    _pick(pg2)
    _assert_rendered_as_text(pg2)
    assert pg2.errors == []


@pytest.mark.slow
def test_the_out_file_works_without_a_server(demo_lake, new_page, tmp_path):
    out = tmp_path / "demo.html"
    proc = subprocess.run([str(Path(sys.executable).with_name("tokenmill")), "view", "--lake", str(demo_lake),
                           "--out", str(out), "--limit", "40"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    pg = new_page()
    pg.goto(out.as_uri())
    pg.wait_for_selector("#rollouts li")
    runs = pg.evaluate("Array.from(document.querySelectorAll('#run option')).map(o => o.value)")
    assert runs == ["demo", "demo-route"]
    assert pg.is_disabled("#where") and "first 40" in pg.text_content("#notice")
    third = pg.locator("#rollouts li").nth(2).get_attribute("data-id")
    pg.fill("#search", third[:12])
    _fresh_list(pg, lambda: pg.press("#search", "Enter"))
    assert pg.locator("#rollouts li").count() == 1
    assert pg.locator("#rollouts li").get_attribute("data-id") == third
    _pick(pg)
    _label(pg, "entropy")
    assert pg.locator(".tokens .tok[data-value]").count() > 0
    pg.select_option("#mode", "compare")
    pg.wait_for_selector(".pane[data-side='b'] .tok")
    _shot(pg, tmp_path, "viewer-file-compare")
    assert pg.errors == []


# ------------------------------------------------------------------ who can drive the server


def _log(tmp_path: Path, url: str) -> str:
    port = url.split(":")[2].split("/")[0]
    return (tmp_path / f"view-{port}.log").read_text()


def test_the_page_works_after_the_token_leaves_the_address_bar(arith_lake, viewer, new_page):
    url = viewer(arith_lake, "r1")
    pg = new_page()
    pg.goto(url)
    pg.wait_for_selector("#rollouts li")
    assert "token=" not in pg.url  # kept in a SameSite=Strict cookie and the page
    pg.reload()  # a reload without the token in the URL still opens the page
    pg.wait_for_selector("#rollouts li")
    _pick(pg)
    assert pg.errors == []


def test_a_page_of_another_origin_can_neither_read_nor_drive_the_viewer(arith_lake, viewer, new_page, tmp_path):
    url = viewer(arith_lake, "r1")
    base = url.split("?")[0]
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "index.html").write_text("<html><body>attacker</body></html>")
    port = _free_port()
    site = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=evil,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pg = new_page()
        for _ in range(100):
            try:
                pg.goto(f"http://127.0.0.1:{port}/")
                break
            except Exception:  # noqa: BLE001 — the attacker's server still starting
                time.sleep(0.1)
        # a cross-origin read (blocked by the browser) and a blind "simple" request (sent,
        # but token-less: the server refuses it before any query); a forged header needs a
        # CORS preflight, which the server never grants
        result = pg.evaluate("""async (base) => {
            const out = {};
            try { const r = await fetch(base + "api/runs"); out.read = await r.text(); }
            catch (e) { out.read = "blocked: " + e; }
            await fetch(base + "api/rollouts?run=r1&where=" + encodeURIComponent("reward < 1"), {mode: "no-cors"});
            try { await fetch(base + "api/runs", {headers: {"X-Tokenmill-Token": "guess"}}); out.header = "sent"; }
            catch (e) { out.header = "blocked: " + e; }
            return out;
        }""", base)
        assert result["read"].startswith("blocked") and result["header"].startswith("blocked"), result
        log = _log(tmp_path, url)
        assert '"GET /api/rollouts?run=r1&where=reward%20%3C%201 HTTP/1.1" 403' in log, log[-2000:]
        assert "OPTIONS" in log or '"GET /api/runs HTTP/1.1" 403' in log
    finally:
        site.terminate()
        site.wait()


def test_a_dns_rebinding_name_gets_nothing_even_with_the_token(arith_lake, viewer, new_page):
    url = viewer(arith_lake, "r1")
    pg = new_page()
    resp = pg.goto(url.replace("127.0.0.1", REBIND))  # the attacker's name, pointing at 127.0.0.1
    assert resp.status == 403 and "is not this server's address" in pg.content()
    assert pg.evaluate("fetch('/api/runs').then(r => r.status)") == 403


def test_a_slow_filter_is_stopped_with_a_message(arith_lake, viewer, new_page):
    url = viewer(arith_lake, "r1", "--query-timeout", "0.3")
    pg = new_page()
    pg.goto(url)
    pg.wait_for_selector("#rollouts li")
    pg.fill("#where", "levenshtein(repeat(completion, 150), reverse(repeat(completion, 150))) >= 0")
    pg.press("#where", "Enter")
    pg.wait_for_function("document.getElementById('error').textContent.includes('was stopped')", timeout=20_000)
    pg.fill("#where", "reward < 2")  # and the server still answers
    _fresh_list(pg, lambda: pg.press("#where", "Enter"))
    assert pg.locator("#rollouts li").count() > 0
