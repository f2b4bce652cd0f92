"""Run untrusted generated code against its unit tests: verdicts the code cannot write.

Three processes, so that the one running the code decides nothing:

    tokenmill ──job──▶ harness (trusted: the tests) ──calls──▶ candidate (the code, jailed)
              ◀─[passed, error]─          ◀──plain values only──

* **the candidate** (candidate.py) runs the code in the jail (jail.py): its own mount, PID,
  network, IPC and UTS namespaces; a root filesystem of read-only system files and the
  interpreter, a tmpfs working directory (`Limits.disk_mb`) and nothing else of the host;
  no privileges (real root drops to a uid of the run's own; other users get a user
  namespace whose capabilities are dropped); kernel limits on CPU, memory, file size, open
  files and processes. When the run ends every process in the namespace dies. An audit
  hook is a second layer only.
* **the harness** (harness.py) holds the tests. Each function the code defines is, in the
  tests' namespace, a stub: its arguments go to the candidate, and back comes a *plain
  value* rebuilt from builtin types (wire.py), or the exception it raised. The assertions
  run here, on values this process built — an object whose `__eq__` says True cannot
  cross, nor can `atexit` output, a patched test list or a forged result line, because
  the candidate writes nothing the harness reads as a verdict.
* **tokenmill** (`run_tests`) reads at most `Limits.output_kb` from the harness, by the
  wall clock, kills the harness's process group at the end (and with it the jail), and
  clamps `passed` to [0, number of tests].

Where the guarantees stop: the candidate can still return hard-coded answers (that is the
dataset's problem, not the sandbox's); tests may only pass plain data to its functions and
only call functions it defines (classes and methods of its objects do not cross); and
without namespaces (`isolation().jailed` False, e.g. a kernel that forbids unprivileged
user namespaces) the code runs as this user with only the limits and the audit hook, which
code in the same interpreter can defeat — the verdicts still come from the harness, but
the host is not protected. `python -m tokenmill.code.sandbox` prints which case this
machine is.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tokenmill.code.sandbox.limits import Limits
from tokenmill.code.sandbox.jail import ENV, SANDBOX_PYTHON_ENV, Isolation, isolation, jail_command, sandbox_python

__all__ = ["Limits", "run_tests", "isolation", "Isolation", "SANDBOX_PYTHON_ENV", "sandbox_python"]

HERE = Path(__file__).resolve().parent


def _source(*names: str) -> str:
    return "\n".join((HERE / n).read_text() for n in names)


def run_tests(code: str, tests: list[str], limits: Limits | None = None, python: str | None = None
              ) -> tuple[int, str | None]:
    """(tests passed, first error or why the run stopped): `tests` (statements, e.g.
    `assert f(1) == 2`, or HumanEval's `def check(candidate): …` + `check(f)`) run in the
    harness against `code` run in the jail. Never raises for anything the code does."""
    limits = limits or Limits()
    iso = isolation(python)
    source = _source("wire.py", "candidate.py")
    cleanup: list[str] = []
    if iso.jailed:
        command, root = jail_command(iso, source, limits, limits.processes)
        cleanup.append(root)
        cwd, env, rlimits = "/", None, False
    else:
        cwd = tempfile.mkdtemp(prefix="tokenmill-sandbox-")
        cleanup.append(cwd)
        command, env, rlimits = [iso.python, "-I", "-S", "-c", source], {**ENV, "HOME": cwd, "TMPDIR": cwd}, True
    job = {"code": code, "tests": list(tests), "command": command, "cwd": cwd, "env": env, "rlimits": rlimits,
           "limits": {k: getattr(limits, k) for k in ("cpu_s", "memory_mb", "file_mb", "open_files")},
           "hook": limits.hook, "read_roots": list(iso.prefixes), "wall_s": limits.wall_s,
           "reply_bytes": limits.reply_kb * 1024}
    try:
        passed, error = _harness(job, limits)
    finally:
        for d in cleanup:
            _remove(d)
    passed = max(0, min(int(passed), len(tests)))
    if error and "MemoryError" in error and not error.startswith("memory limit"):
        error = f"memory limit ({limits.memory_mb} MB): {error}"
    return passed, error


def _harness(job: dict, limits: Limits) -> tuple[int, str | None]:
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _source("wire.py", "harness.py")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd="/", start_new_session=True)
    except OSError as e:
        return 0, f"sandbox: cannot start the harness ({e})"
    try:
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except OSError:
            pass
        out, err, late = _read_bounded(proc, time.monotonic() + limits.wall_s + 10, limits.output_kb * 1024)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the harness, `unshare`, and so the jail
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    if late:
        return 0, f"timeout: killed after {limits.wall_s:g} s wall time"
    try:
        passed, error = json.loads(out.decode().strip().splitlines()[-1])
        if isinstance(passed, int) and (error is None or isinstance(error, str)):
            return passed, error
    except (ValueError, IndexError, UnicodeDecodeError, TypeError):
        pass
    tail = err.decode(errors="replace").strip().splitlines()
    return 0, f"sandbox: the harness failed ({tail[-1][:200] if tail else f'exit status {proc.returncode}'})"


def _read_bounded(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, bool]:
    """(stdout, stderr, timed out): each at most `cap` bytes, the rest read and dropped."""
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), True
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                buf += chunk[: max(0, cap - len(buf))]
    finally:
        sel.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), False


def _remove(path: str) -> None:
    import shutil

    try:
        os.rmdir(path)  # the jail's mount point: empty on the host
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
