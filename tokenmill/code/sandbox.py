"""Run untrusted generated code against its unit tests, safely.

Layers, each on its own enough for the common failure, together for hostile code:

* a separate interpreter (`python -I -S`: no environment, no site-packages) in an empty
  temporary directory, with a scrubbed environment (HOME = that directory);
* kernel limits set before exec: CPU seconds, address space, file size, open files and
  processes (RLIMIT_NPROC: the running user's processes plus `Limits.processes`), plus a
  wall-clock timeout that kills the whole process group;
* run by root (containers, CI), the code runs as `nobody` with no groups and no new
  privileges (`setpriv`), so the process limit binds (root ignores it) and nothing
  root-only is readable; where `nobody` cannot reach the interpreter and its standard
  library it stays root, and `interpreter().user` says why;
* a new network namespace (`unshare --net` as root, `unshare --user --map-root-user --net`
  where the kernel allows unprivileged user namespaces): the code sees only a down loopback;
* an audit hook installed before the code runs (hooks cannot be removed): no socket, no
  process creation (fork, exec, spawn, system, subprocess), no ctypes, no importing the
  modules that bypass those events, and no file access outside the working directory
  except reading the standard library.

Whatever happens, the result is (tests passed, a one-line reason) — never an exception
and never an effect outside the working directory.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Limits:
    wall_s: float = 5.0
    cpu_s: int = 5
    memory_mb: int = 512
    file_mb: int = 8
    open_files: int = 64
    processes: int = 0  # new processes the code may start (RLIMIT_NPROC above the current count)


_RUNNER = r"""
import json, os, sys
src, tests, read_roots = json.loads(sys.stdin.read())
cwd = os.path.realpath(os.getcwd())
BLOCKED_MODULES = {"ctypes", "_ctypes", "_posixsubprocess", "subprocess", "multiprocessing", "_multiprocessing",
                   "socket", "_socket", "ssl", "_ssl", "pty", "select", "selectors", "asyncio", "concurrent"}
PROCESS_EVENTS = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
                  "os.kill", "os.killpg", "pty.spawn", "ctypes.")
PATH_EVENTS = {"os.remove": (0,), "os.unlink": (0,), "os.rename": (0, 1), "os.replace": (0, 1), "os.mkdir": (0,),
               "os.rmdir": (0,), "os.chmod": (0,), "os.chown": (0,), "os.link": (0, 1), "os.symlink": (0, 1),
               "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (0, 1),
               "shutil.move": (0, 1), "os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,)}

def inside(path, roots):
    p = os.path.realpath(os.fsdecode(path))
    return any(p == r or p.startswith(r + os.sep) for r in roots)

def writes(mode, flags):
    if isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
        return True
    return isinstance(mode, str) and any(c in mode for c in "wax+")

def hook(event, args):
    if event == "open":
        path, mode, flags = (list(args) + [None, None])[:3]
        if path is None or isinstance(path, int) or inside(path, [cwd]):
            return
        if not writes(mode, flags) and inside(path, read_roots):
            return
        raise PermissionError(f"sandbox: no access to {os.fsdecode(path)}")
    if event.startswith("socket."):
        raise PermissionError("sandbox: no network")
    if event.startswith(PROCESS_EVENTS):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0].split(".")[0] in BLOCKED_MODULES:
        raise ImportError(f"sandbox: module {args[0]} is not allowed")
    if event in PATH_EVENTS:
        for i in PATH_EVENTS[event]:
            p = args[i] if i < len(args) else None
            if p is not None and not isinstance(p, int) and not inside(p, [cwd]):
                if event in ("os.listdir", "os.scandir") and inside(p, read_roots):
                    continue
                raise PermissionError(f"sandbox: no access to {os.fsdecode(p)}")

sys.addaudithook(hook)
ns = {"__name__": "__main__"}
def result(passed, err):
    sys.__stdout__.write("\n" + json.dumps([passed, err]) + "\n"); sys.__stdout__.flush()
try:
    exec(compile(src, "<completion>", "exec"), ns)
except BaseException as e:
    result(0, f"{type(e).__name__}: {e}"[:300]); sys.exit(0)
passed, err = 0, None
for t in tests:
    try:
        exec(t, ns); passed += 1
    except BaseException as e:
        err = err or f"{type(e).__name__}: {e}"[:300]
result(passed, err)
"""


NOBODY = 65534  # uid/gid of `nobody` on Linux; looked up by name where it exists


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return NOBODY, NOBODY


# what the code's interpreter reports about itself: who runs it, where its standard library
# is (the only files the code may read besides its directory), and that it can read it
_SELF_REPORT = ("import json, os, sysconfig; p = sysconfig.get_paths(); "
                "roots = sorted({os.path.realpath(p[k]) for k in ('stdlib', 'platstdlib') if k in p}); "
                "print(json.dumps([os.getuid(), roots, len(open(os.__file__, 'rb').read(64)) > 0]))")


@dataclass(frozen=True)
class Interpreter:
    python: str
    read_roots: tuple[str, ...]  # its standard library, readable by the code
    drop: tuple[str, ...]  # command prefix that runs it as `nobody`, or () to run as ourselves
    user: str  # who runs the code, and why


def _self_report(cmd: list[str]) -> tuple[int, list[str], bool] | str:
    """(uid, standard library roots, can read them) as `cmd` sees itself, or why it failed."""
    try:
        r = subprocess.run(cmd + ["-I", "-S", "-c", _SELF_REPORT], capture_output=True, text=True, timeout=20, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"[:200]
    try:
        return tuple(json.loads(r.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1][:200]


SANDBOX_PYTHON_ENV = "TOKENMILL_SANDBOX_PYTHON"


def interpreter(python: str | None = None) -> Interpreter:
    """How the code runs under `python` (default: `$TOKENMILL_SANDBOX_PYTHON`, else this
    interpreter), probed once per interpreter.

    Run by root, the code runs as `nobody` (`setpriv`: no groups, no new privileges) only if
    `nobody` then starts the *same* installation and can read its standard library: a
    Python under a private home directory (pyenv in /root) is not reachable, and where it
    is started anyway it finds another standard library. Such a run stays root, and `user`
    says why; `TOKENMILL_SANDBOX_PYTHON=/usr/bin/python3` then lets the code drop (every
    verdict comes from that Python)."""
    return _interpreter(python or os.environ.get(SANDBOX_PYTHON_ENV) or sys.executable)


@lru_cache(maxsize=None)
def _interpreter(python: str) -> Interpreter:
    own = _self_report([python])
    if isinstance(own, str):  # it does not start: run_tests will say so
        return Interpreter(python, (), (), f"{python} does not start ({own})")
    uid, roots, _ = own
    if os.geteuid() != 0:
        return Interpreter(python, tuple(roots), (), f"uid {uid} (not root)")
    n_uid, n_gid = _nobody()
    drop = ["setpriv", f"--reuid={n_uid}", f"--regid={n_gid}", "--clear-groups", "--no-new-privs"]
    theirs = _self_report(drop + [python])
    if isinstance(theirs, str):
        return Interpreter(python, tuple(roots), (), f"root: uid {n_uid} cannot run {python} ({theirs})")
    if theirs[0] != n_uid or theirs[1] != roots or not theirs[2]:
        return Interpreter(python, tuple(roots), (), f"root: uid {n_uid} cannot reach the standard library of {python} "
                                                     f"({', '.join(roots)})")
    return Interpreter(python, tuple(roots), tuple(drop), f"uid {n_uid} (dropped from root)")


@lru_cache(maxsize=1)
def network_isolation() -> list[str]:
    """The command prefix that gives a process its own (empty) network namespace, or []
    where the kernel forbids it (the audit hook still refuses sockets)."""
    # root first tries a plain network namespace: inside a user namespace that maps only
    # root, the later drop to `nobody` would have no uid to become
    cmds = [["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]]
    for cmd in cmds if os.geteuid() == 0 else cmds[::-1]:
        try:
            if subprocess.run(cmd + ["true"], capture_output=True, timeout=5).returncode == 0:
                return cmd
        except (OSError, subprocess.TimeoutExpired):
            continue
    return []


def _processes_of(uid: int) -> int:
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                n += os.stat(f"/proc/{p}").st_uid == uid
            except OSError:  # exited meanwhile
                pass
    return n


def _limit(limits: Limits, run_uid: int):
    def apply() -> None:  # runs in the child between fork and exec
        mb = 1 << 20
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        try:
            # the kernel counts the real user's processes; this child becomes one of them
            # when it drops to another user, and already is one otherwise
            current = _processes_of(run_uid) + (run_uid != os.getuid())
            resource.setrlimit(resource.RLIMIT_NPROC, (current + limits.processes, current + limits.processes))
        except (OSError, ValueError):
            pass
    return apply


def run_tests(code: str, tests: list[str], limits: Limits | None = None, python: str | None = None) -> tuple[int, str | None]:
    """(tests passed, first error or the reason the run was stopped). `python` runs the code
    (default: this interpreter)."""
    limits = limits or Limits()
    interp = interpreter(python)
    drop = list(interp.drop)
    run_uid = _nobody()[0] if drop else os.getuid()
    with tempfile.TemporaryDirectory(prefix="tokenmill-sandbox-") as cwd:
        if drop:  # its working directory is the one place the code may write
            try:
                os.chown(cwd, *_nobody())
            except OSError:  # a temp filesystem without owners: run as ourselves rather than not at all
                drop, run_uid = [], os.getuid()
        env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "TMPDIR": cwd, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        cmd = network_isolation() + drop + [interp.python, "-I", "-S", "-c", _RUNNER]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=cwd, env=env, start_new_session=True, preexec_fn=_limit(limits, run_uid), text=True)
        except OSError as e:
            return 0, f"sandbox: cannot start the interpreter ({e})"
        try:
            out, err = proc.communicate(json.dumps([code, tests, list(interp.read_roots)]), timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return 0, f"timeout: killed after {limits.wall_s:g} s wall time"
        finally:
            _kill(proc)  # nothing the code started outlives the run
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return 0, f"cpu time limit: killed after {limits.cpu_s} s of CPU"
    try:
        passed, error = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (err.strip().splitlines() or [f"exit status {proc.returncode}, no output"])[-1]
        return 0, tail[:300]
    if error and error.startswith("MemoryError"):
        error = f"memory limit ({limits.memory_mb} MB): {error}"
    return int(passed), error


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
