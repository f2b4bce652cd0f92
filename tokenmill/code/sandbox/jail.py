"""The jail: the command line that runs the candidate's interpreter in its own namespaces
with no privileges, and what this machine allows of it.

    unshare --mount --pid --fork --kill-child --net --ipc --uts [--user --map-root-user]
        <trusted python> -I -S -c <jail_setup.py> <config>  →  exec <sandbox python> -I -S -c <candidate>

* real root (containers, CI): plain namespaces; the setup drops to a uid of the run's own
  (random, owning no file, no process but the run's), clears groups and capabilities;
* any other user: the same inside a user namespace mapping only that user to root there;
  the setup drops the namespace's capabilities (bounding set emptied, no new privileges);
* neither (namespaces forbidden): no jail — `isolation().jailed` is False, the audit hook
  is the only layer, and `isolation().why` says so. tokenmill then still runs the code, so
  a laptop without user namespaces can try the code world, and says it in the run's log.

The PID namespace's first process is the setup, then the candidate's interpreter: when it
ends, or `unshare` is killed (`--kill-child`), the kernel kills everything else in the
namespace — a `setsid` grandchild included.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
FILES = ("/etc/ld.so.cache", "/etc/localtime")
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/sandbox", "TMPDIR": "/sandbox", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
SANDBOX_PYTHON_ENV = "TOKENMILL_SANDBOX_PYTHON"
RUN_UIDS = (1_000_000_000, 2_000_000_000)  # where a root run's own uid is drawn


@dataclass(frozen=True)
class Isolation:
    jailed: bool  # the candidate runs in the jail (namespaces, no privileges)
    unshare: tuple[str, ...]  # the command prefix, () when not jailed
    as_root: bool  # real root: the setup drops to a run uid
    python: str  # the interpreter the candidate runs (its real path)
    prefixes: tuple[str, ...]  # its installation, bound read-only into the jail
    why: str  # how the code runs, in words


def sandbox_python() -> str:
    """The candidate's interpreter: `$TOKENMILL_SANDBOX_PYTHON`, else this one (its real
    path: a venv's `bin/python` is a symlink, and -S ignores the venv anyway)."""
    return os.path.realpath(os.environ.get(SANDBOX_PYTHON_ENV) or sys.executable)


_PREFIXES = "import json, sys; print(json.dumps(sorted({sys.base_prefix, sys.base_exec_prefix})))"


def _prefixes(python: str) -> list[str] | str:
    try:
        r = subprocess.run([python, "-I", "-S", "-c", _PREFIXES], capture_output=True, text=True, timeout=20, cwd="/")
        return [os.path.realpath(p) for p in json.loads(r.stdout)]
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        return f"{python} does not start ({type(e).__name__})"


def isolation(python: str | None = None) -> Isolation:
    """What the jail can do here for `python` (default `sandbox_python()`), probed once."""
    return _isolation(python or sandbox_python(), os.geteuid() == 0)


@lru_cache(maxsize=None)
def _isolation(python: str, as_root: bool) -> Isolation:
    prefixes = _prefixes(python)
    if isinstance(prefixes, str):
        return Isolation(False, (), as_root, python, (), prefixes)
    base = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts"]
    cmd = base if as_root else base[:1] + ["--user", "--map-root-user"] + base[1:]
    iso = Isolation(True, tuple(cmd), as_root, python, tuple(prefixes), "")
    probe = run_in_jail(iso, "print('ok')")
    if probe.returncode == 0 and probe.stdout.strip() == b"ok":
        who = "a uid of its own, dropped from root" if as_root else "no capabilities, in a user namespace"
        return Isolation(True, tuple(cmd), as_root, python, tuple(prefixes),
                         f"jailed: own mount/PID/network namespaces, {who}, read-only system files, "
                         f"a tmpfs working directory")
    reason = (probe.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
    return Isolation(False, (), as_root, python, tuple(prefixes),
                     f"NOT jailed (namespaces refused here: {reason[:160]}); the audit hook is the only layer")


def jail_command(iso: Isolation, source: str, limits, processes: int = 0) -> tuple[list[str], str]:
    """(command, empty mount-point directory to remove afterwards) running `source` in the jail."""
    root = os.path.realpath(tempfile.mkdtemp(prefix="tokenmill-jail-"))
    uid = random.randrange(*RUN_UIDS) if iso.as_root else None
    cfg = {
        "root": root, "system": list(SYSTEM), "files": list(FILES), "prefixes": list(iso.prefixes),
        "python": iso.python, "source": source, "env": ENV, "uid": uid, "tmpfs_uid": uid or 0,
        "disk_mb": limits.disk_mb,
        # RLIMIT_NPROC counts the processes of a uid (in a user namespace, of that namespace):
        # the run uid has only the candidate; the namespace unshare, the init and the candidate
        "nproc": (1 if iso.as_root else 3) + processes,
        "limits": {k: getattr(limits, k) for k in ("cpu_s", "memory_mb", "file_mb", "open_files")},
    }
    setup = (HERE / "jail_setup.py").read_text()
    return [*iso.unshare, sys.executable, "-I", "-S", "-c", setup, json.dumps(cfg)], root


def run_in_jail(iso: Isolation, source: str, timeout: float = 20):
    """Run `source` in the jail and wait (the probe, and tests)."""
    from tokenmill.code.sandbox.limits import Limits

    cmd, root = jail_command(iso, source, Limits())
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, b"", f"{type(e).__name__}: {e}".encode())
    finally:
        os.rmdir(root)
