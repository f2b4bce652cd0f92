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
server answers SQL over the lake, so only its user may drive it:

* it binds loopback addresses only, and answers only requests whose Host header is the
  address it is bound to (a DNS-rebinding name that points at 127.0.0.1 is refused);
* a random token, printed in the URL as notebook servers do, is required: the page
  (`/?token=…`, then a SameSite=Strict cookie) and every API call (the
  `X-Tokenmill-Token` header, which no page of another origin can send without a CORS
  preflight this server never grants) — a blind cross-site request runs nothing;
* each query is interrupted after `query_timeout_s` and DuckDB's memory is capped at
  `memory_mb`; malformed parameters are 400 with a message.

`write_html` puts the same answers for the first `limit` rollouts of each run into the page
itself, so the file opens anywhere without a server.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import socket
import threading
from functools import lru_cache
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb

from tokenmill.errors import TokenmillError
from tokenmill.report import token_view as V
from tokenmill.storage.catalog import connect, is_file_problem, unreadable_error
from tokenmill.storage.lake import Lake


@lru_cache(maxsize=1)
def _template() -> str:
    return resources.files("tokenmill.report").joinpath("viewer.html").read_text(encoding="utf-8")


def _embed(data) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can end it early."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).replace("<", "\\u003c").replace(">", "\\u003e")


def page(data=None, run: str | None = None, token: str | None = None) -> str:
    html = _template().replace("__TM_DATA__", _embed(data))
    attrs = (f' data-run="{_attr(run)}"' if run else "") + (f' data-token="{_attr(token)}"' if token else "")
    if attrs:  # the server's --run (the page's default choice) and the token its API calls carry
        html = html.replace("<body>", f"<body{attrs}>", 1)
    return html


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ the server


TOKEN_HEADER = "X-Tokenmill-Token"
TOKEN_COOKIE = "tokenmill_token"


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        try:
            q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True, strict_parsing=False).items()}
        except ValueError:
            return self._json_error(HTTPStatus.BAD_REQUEST, "malformed query string")
        host = self.headers.get("Host", "")
        if host.lower() not in self.server.hosts:
            return self._json_error(HTTPStatus.FORBIDDEN, f"Host {host[:80]!r} is not this server's address "
                                    f"({' or '.join(sorted(self.server.hosts))}); open the URL tokenmill view printed")
        try:
            if url.path in ("/", "/index.html"):
                return self._page(q)
            if url.path.startswith("/api/"):
                if not self._token_ok(self.headers.get(TOKEN_HEADER)):
                    return self._json_error(HTTPStatus.FORBIDDEN, f"missing or wrong {TOKEN_HEADER} header: "
                                            "open the URL tokenmill view printed")
                body = self.server.answer(url.path[5:], q)
                return self._send(HTTPStatus.OK, json.dumps(body, default=str).encode(), "application/json")
            return self._json_error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
        except QueryTimeout as e:
            return self._json_error(HTTPStatus.SERVICE_UNAVAILABLE, str(e))
        except TokenmillError as e:
            return self._json_error(HTTPStatus.BAD_REQUEST, str(e))
        except duckdb.Error as e:
            return self._json_error(HTTPStatus.BAD_REQUEST, str(e).strip().splitlines()[0])
        except KeyError as e:
            return self._json_error(HTTPStatus.BAD_REQUEST, f"missing query parameter {e}")

    def _token_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.server.token.encode())

    def _page(self, q: dict) -> None:
        cookie = SimpleCookie()
        cookie.load(self.headers.get("Cookie", ""))
        given = q.get("token") or (cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None)
        if not self._token_ok(given):
            return self._send(HTTPStatus.FORBIDDEN, b"tokenmill view: open the URL it printed (with ?token=...)\n",
                              "text/plain; charset=utf-8")
        cookie = f"{TOKEN_COOKIE}={self.server.token}; Path=/; HttpOnly; SameSite=Strict"
        body = page(None, self.server.run, self.server.token).encode()
        self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", {"Set-Cookie": cookie})

    def _json_error(self, status: HTTPStatus, msg: str) -> None:
        self._send(status, json.dumps({"error": msg}).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")  # the token stays off other sites' logs
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        if self.server.verbose:
            super().log_message(fmt, *args)


class QueryTimeout(TokenmillError):
    pass


# the tables each request reads (searched for an unreadable file when DuckDB does not name it)
READS = {"runs": ["rollouts"], "rollouts": ["rollouts"], "siblings": ["rollouts"],
         "rollout": ["rollouts", "tokens", "critical", "routing", "hallucination_spans", "ast_tokens", "token_rewards"]}


def _int_param(q: dict, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = q.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TokenmillError(f"query parameter {name}={raw[:40]!r} is not an integer",
                             fix=f"give {name} as a whole number ≥ {lo}") from None
    if value < lo or (hi is not None and value > hi):
        raise TokenmillError(f"query parameter {name}={value} is out of range",
                             fix=f"give {name} between {lo} and {hi}" if hi is not None else f"give {name} ≥ {lo}")
    return value


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, lake: Lake, host: str = "127.0.0.1", port: int = 8765, run: str | None = None,
                 verbose: bool = False, token: str | None = None, query_timeout_s: float = 10.0,
                 memory_mb: int = 1024):
        check_loopback(host)
        self.lake, self.run, self.verbose = lake, run, verbose
        self.token = token or secrets.token_urlsafe(24)
        self.query_timeout_s = query_timeout_s
        # views resolve files at query time: new commits show up
        self.con = connect(lake, read_only=True, memory_mb=memory_mb)
        self._local = threading.local()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ViewerHandler)
        bound = self.server_address[1]
        # the bound address, and `localhost` (a name the attacker's DNS cannot answer for)
        names = {"localhost", "127.0.0.1", "[::1]"} if host == "localhost" else {f"[{host}]" if ":" in host else host,
                                                                                 "localhost"}
        self.hosts = {f"{h}:{bound}".lower() for h in names}

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self.con.cursor()  # one per thread: a connection is not thread-safe
        return cur

    def answer(self, what: str, q: dict) -> object:
        con = self.cursor()
        timer = threading.Timer(self.query_timeout_s, con.interrupt)  # the query stops, not only the reply
        timer.start()
        try:
            return self._answer(con, what, q)
        except duckdb.InterruptException:
            raise QueryTimeout(f"the query ran longer than {self.query_timeout_s:g} s and was stopped",
                               fix="narrow the filter (or start tokenmill view with a larger --query-timeout)") from None
        except duckdb.Error as e:
            if is_file_problem(e):  # name the file, as `tokenmill sql` does
                raise unreadable_error(self.lake, e, READS.get(what, []), q.get("run")) from None
            raise
        finally:
            timer.cancel()

    def _answer(self, con, what: str, q: dict) -> object:
        if what == "labels":
            return V.labels_json()
        if what == "runs":
            return V.list_runs(con)
        if what == "rollouts":
            return V.list_rollouts(con, q["run"], q.get("where"), q.get("q"), _int_param(q, "offset", 0, 0),
                                   _int_param(q, "limit", 50, 1, V.PAGE_MAX))
        if what == "rollout":
            return V.rollout_detail(con, q["run"], q["id"], q.get("configs"))
        if what == "siblings":
            return V.siblings(con, q["run"], q["id"])
        raise TokenmillError(f"unknown request /api/{what}", fix="see `tokenmill view --help`")

    @property
    def url(self) -> str:
        """The address with its token: what the user opens."""
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/?token={self.token}"

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
