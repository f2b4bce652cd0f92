"""`tokenmill view`: the token viewer, as a loopback web server or one self-contained file.

The page (`viewer.html`) asks for one page of rollouts or one rollout at a time:

  GET /                         the page
  GET /api/labels               the label definitions (colour rules, legend text)
  GET /api/runs                 runs with rollout counts
  GET /api/rollouts?run&where&q&offset&limit   a page of a run's rollouts
  GET /api/rollout?run&id       one rollout: tokens, per-token labels, spans
  GET /api/siblings?run&id      the other rollouts of the same prompt (compare mode)

Each answer is one DuckDB query over the lake's views (`report/token_view.py`) on a
read-only connection confined to the lake, so a filter cannot touch other files. The
server binds loopback addresses only: it answers SQL over the lake.

`write_html` puts the same answers for the first `limit` rollouts of each run into the page
itself, so the file opens anywhere without a server.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb

from tokenmill.errors import TokenmillError
from tokenmill.report import token_view as V
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("tokenmill.report").joinpath("viewer.html").read_text(encoding="utf-8")


def _embed(data) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can end it early."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).replace("<", "\\u003c").replace(">", "\\u003e")


def page(data=None, run: str | None = None) -> str:
    html = _template().replace("__TM_DATA__", _embed(data))
    if run:  # the server's --run: the page's default choice
        html = html.replace("<body>", f"<body data-run=\"{_attr(run)}\">", 1)
    return html


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ the server


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if url.path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, page(None, self.server.run).encode(), "text/html; charset=utf-8")
            if url.path.startswith("/api/"):
                body = self.server.answer(url.path[5:], q)
                return self._send(HTTPStatus.OK, json.dumps(body, default=str).encode(), "application/json")
            return self._json_error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
        except TokenmillError as e:
            return self._json_error(HTTPStatus.BAD_REQUEST, str(e))
        except duckdb.Error as e:
            return self._json_error(HTTPStatus.BAD_REQUEST, str(e).strip().splitlines()[0])
        except KeyError as e:
            return self._json_error(HTTPStatus.BAD_REQUEST, f"missing query parameter {e}")

    def _json_error(self, status: HTTPStatus, msg: str) -> None:
        self._send(status, json.dumps({"error": msg}).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        if self.server.verbose:
            super().log_message(fmt, *args)


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, lake: Lake, host: str = "127.0.0.1", port: int = 8765, run: str | None = None,
                 verbose: bool = False):
        check_loopback(host)
        self.lake, self.run, self.verbose = lake, run, verbose
        self.con = connect(lake, read_only=True)  # views resolve files at query time: new commits show up
        self._local = threading.local()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ViewerHandler)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self.con.cursor()  # one per thread: a connection is not thread-safe
        return cur

    def answer(self, what: str, q: dict) -> object:
        con = self.cursor()
        if what == "labels":
            return V.labels_json()
        if what == "runs":
            return V.list_runs(con)
        if what == "rollouts":
            return V.list_rollouts(con, q["run"], q.get("where"), q.get("q"), int(q.get("offset") or 0),
                                   int(q.get("limit") or 50))
        if what == "rollout":
            return V.rollout_detail(con, q["run"], q["id"])
        if what == "siblings":
            return V.siblings(con, q["run"], q["id"])
        raise TokenmillError(f"unknown request /api/{what}", fix="see `tokenmill view --help`")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.con.close()


def check_loopback(host: str) -> None:
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise TokenmillError(f"tokenmill view serves SQL over the lake, so it binds loopback only, not {host}",
                             fix="use --host 127.0.0.1 (default) or ::1; reach it from elsewhere through an SSH tunnel")


# ------------------------------------------------------------------ the file


def static_data(lake: Lake, runs: list[str] | None = None, where: str | None = None, limit: int = 200) -> dict:
    """The viewer's answers for the first `limit` rollouts (matching `where`) of each run."""
    con = connect(lake, read_only=True)
    try:
        all_runs = V.list_runs(con)
        if runs:
            missing = sorted(set(runs) - {r["run"] for r in all_runs})
            if missing:
                raise TokenmillError(f"run {', '.join(missing)} is not in {lake.uri}",
                                     fix=f"runs: {', '.join(r['run'] for r in all_runs) or 'none'}")
            all_runs = [r for r in all_runs if r["run"] in runs]
        rollouts, details = {}, {}
        for r in all_runs:
            rows = V.list_rollouts(con, r["run"], where, None, 0, limit)["rows"] if limit else []
            rollouts[r["run"]] = rows
            details[r["run"]] = {x["rollout_id"]: V.rollout_detail(con, r["run"], x["rollout_id"]) for x in rows}
        return {"labels": V.labels_json(), "runs": all_runs, "rollouts": rollouts, "details": details,
                "where": where or "", "limit": limit, "run": runs[0] if runs else None, "lake": lake.uri}
    finally:
        con.close()


def write_html(lake: Lake, out: str | os.PathLike, runs: list[str] | None = None, where: str | None = None,
               limit: int = 200) -> Path:
    """Write the self-contained viewer file atomically; returns its path."""
    data = static_data(lake, runs, where, limit)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page(data), encoding="utf-8")
    tmp.replace(out)
    return out
