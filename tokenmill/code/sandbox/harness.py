"""The harness: runs the tests, outside the jail, against a candidate that runs inside it.

Sent as source text after wire.py and run as `python -I -S -c` by tokenmill, which reads
one line back: `[tests passed, first error]`. The tests are the dataset's (trusted); the
generated code never runs here. Each name the code defines becomes, in the tests'
namespace, a stub that sends its arguments to the candidate process and returns the plain
value that comes back (wire.py), or raises what the candidate raised. So an assertion
passes only on a value this process holds and compares itself, and the candidate cannot
reach this process: another PID namespace, another uid, no shared file but its own pipes.

Job (stdin, JSON): {"code", "tests", "command", "cwd", "limits" (applied before exec when
"rlimits"), "hook", "read_roots", "wall_s", "reply_bytes"}.
A candidate process that dies (a crash, a limit, `os._exit`) fails the test that was
running; the next test starts a fresh one. The wall clock bounds the whole run.
"""

import builtins
import json
import os
import signal
import subprocess
import sys
import time

job = json.loads(sys.stdin.read())
deadline = time.monotonic() + job["wall_s"]


class CandidateError(Exception):
    """What the candidate raised, when it is not a builtin exception, or how it failed."""


class OutOfTime(BaseException):  # not an Exception: a test's `except Exception` cannot swallow it
    pass


def _limits():
    import resource

    lim, mb = job["limits"], 1 << 20
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Candidate:
    def __init__(self):
        self.proc = subprocess.Popen(job["command"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=job["cwd"], env=job.get("env"),
                                     preexec_fn=_limits if job["rlimits"] else None)
        # in the harness's process group: tokenmill kills the group, `unshare` with it, and
        # the kernel then everything in the jail's PID namespace
        self.reader = FrameReader(self.proc.stdout.fileno(), job["reply_bytes"])  # noqa: F821 (wire.py)
        self.dead = None
        self.send({"code": job["code"], "hook": job["hook"], "read_roots": job["read_roots"]})
        msg = self.receive()
        if msg[0] == "error" and len(msg) == 2 and isinstance(msg[1], str):
            raise CodeError(msg[1][:300])
        if msg[0] != "ready" or len(msg) != 2 or not isinstance(msg[1], dict):
            raise self.failed("an unexpected first reply")
        self.names = msg[1]

    def send(self, message):
        try:
            write_frame(self.proc.stdin.fileno(), message)  # noqa: F821
        except OSError:
            raise self.failed("it stopped reading") from None

    def receive(self):
        try:
            msg = self.reader.read(deadline)
        except WireError as e:  # noqa: F821
            if str(e) == "timeout":
                self.kill()
                raise OutOfTime() from None
            raise self.failed(str(e)) from None
        if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
            raise self.failed("a malformed reply")
        return msg

    def failed(self, what):
        """Kill it; the CandidateError that says how it ended."""
        self.kill()
        code = self.proc.returncode
        if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            self.dead = f"cpu time limit: killed after {job['limits']['cpu_s']} s of CPU"
        elif code in (-signal.SIGKILL, 128 + signal.SIGKILL) and what == "ended":  # SIGXCPU ignored: the hard limit
            self.dead = f"cpu time limit: killed after {job['limits']['cpu_s'] + 1} s of CPU (SIGKILL)"
        elif what == "ended":
            tail = b""
            try:
                os.set_blocking(self.proc.stderr.fileno(), False)
                tail = self.proc.stderr.read(4096) or b""
            except (OSError, TypeError):
                pass
            lines = tail.decode(errors="replace").strip().splitlines()
            why = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            self.dead = lines[-1][:300] if lines and lines[-1].startswith("sandbox:") else \
                f"the candidate's process ended ({why})"
        else:
            self.dead = f"the candidate's process sent {what}"
        return CandidateError(self.dead)

    def call(self, name, args, kwargs):
        if self.dead:
            raise CandidateError(self.dead)
        try:
            message = ["call", name, encode(list(args)), encode(kwargs)]  # noqa: F821
        except WireError as e:  # noqa: F821 — e.g. a test passing a function: unsupported
            raise CandidateError(f"cannot pass to the candidate: {e}") from None
        self.send(message)
        msg = self.receive()
        try:
            if msg[0] == "ok" and len(msg) == 3:
                value = decode(msg[1])  # noqa: F821
                if msg[2] is not None:
                    _write_back(args, decode(msg[2]))  # noqa: F821
                return value
            if msg[0] == "raise" and len(msg) == 3 and all(isinstance(m, str) for m in msg[1:]):
                kind = getattr(builtins, msg[1], None)
                if isinstance(kind, type) and issubclass(kind, Exception):
                    raise kind(msg[2])
                raise CandidateError(f"{msg[1][:60]}: {msg[2]}")
            if msg[0] == "error" and len(msg) == 2 and isinstance(msg[1], str):
                raise CandidateError(msg[1][:300])
        except WireError as e:  # noqa: F821
            raise self.failed(f"a malformed value ({e})") from None
        raise self.failed("a malformed reply")

    def kill(self):
        try:
            self.proc.kill()  # `unshare`: --kill-child takes the jail's namespace down with it
        except OSError:
            pass
        self.proc.wait()


def _write_back(args, after):
    """Mutable arguments as the candidate left them (a test may check an in-place sort)."""
    if not isinstance(after, list) or len(after) != len(args):
        return
    for a, b in zip(args, after):
        if type(a) is list and type(b) is list:
            a[:] = b
        elif type(a) is dict and type(b) is dict:
            a.clear()
            a.update(b)
        elif type(a) is set and type(b) is set:
            a.clear()
            a.update(b)


class CodeError(Exception):
    """The code itself failed to run (a syntax error, an exception at import time)."""


def _stub(name):
    def call(*args, **kwargs):
        if state["candidate"] is None:
            state["candidate"] = Candidate()
        return state["candidate"].call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def main():
    passed, error = 0, None
    try:
        first = state["candidate"] = Candidate()
    except CodeError as e:
        return 0, str(e)
    except CandidateError as e:
        return 0, str(e)
    except OutOfTime:
        return 0, f"timeout: killed after {job['wall_s']:g} s wall time"
    ns = {"__name__": "__main__"}
    for name, kind in first.names.items():
        if kind == ["fn"]:
            ns[name] = _stub(name)
        elif isinstance(kind, list) and len(kind) == 2 and kind[0] == "v":
            try:
                ns[name] = decode(kind[1])  # noqa: F821
            except WireError:  # noqa: F821
                pass
    for test in job["tests"]:
        cand = state["candidate"]
        if cand is not None and cand.dead:
            try:
                state["candidate"] = Candidate()
            except (CodeError, CandidateError) as e:
                error = error or str(e)
                continue
            except OutOfTime:
                return passed, f"timeout: killed after {job['wall_s']:g} s wall time"
        try:
            exec(compile(test, "<test>", "exec"), ns)
            passed += 1
        except OutOfTime:
            return passed, f"timeout: killed after {job['wall_s']:g} s wall time"
        except CandidateError as e:  # how the candidate failed: its own words
            error = error or str(e)[:300]
        except BaseException as e:  # noqa: BLE001 — a failing test, whatever it raised
            error = error or f"{type(e).__name__}: {e}"[:300]
    return passed, error


state = {"candidate": None}
try:
    result = main()
finally:
    if state["candidate"] is not None:
        state["candidate"].kill()
sys.stdout.write(json.dumps(list(result)) + "\n")
