"""The adversarial corpus (attacks.py) as root and as an unprivileged user, with the audit
hook and without it (the jail alone): no forged verdict, no effect outside, bounded memory."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from attacks import ATTACKS, SECRET_TEXT, TESTS

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("sandbox_driver.py")
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
MAX_PARENT_RSS_KB = 64 * 1024  # the driver's peak: the sandbox's parent, 300 MB floods included


class Listener:
    """A loopback server of the host, counting the connections it gets."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port, self.accepted, self.stop = self.sock.getsockname()[1], 0, False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def _unprivileged_copy(tmp: Path) -> Path:
    """The sandbox package and the corpus where `nobody` can read them."""
    dst = tmp / "importable"
    (dst / "tokenmill" / "code").mkdir(parents=True)
    shutil.copy(ROOT / "tokenmill" / "__init__.py", dst / "tokenmill")
    shutil.copy(ROOT / "tokenmill" / "code" / "__init__.py", dst / "tokenmill" / "code")
    shutil.copytree(ROOT / "tokenmill" / "code" / "sandbox", dst / "tokenmill" / "code" / "sandbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "tests" / "code").mkdir(parents=True)
    for f in ("attacks.py", "sandbox_driver.py"):
        shutil.copy(Path(__file__).with_name(f), dst / "tests" / "code")
    for p in [tmp, *tmp.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


MODES = [("root", True), ("root", False), ("unprivileged", True), ("unprivileged", False)]


@pytest.mark.parametrize("who,hook", MODES, ids=[f"{w}-{'hook' if h else 'jail-only'}" for w, h in MODES])
def test_no_attack_forges_a_verdict_or_reaches_outside(who, hook):
    if os.geteuid() != 0:
        pytest.skip("switching users needs root; CI runs as root")
    tmp_path = Path(tempfile.mkdtemp(prefix="tokenmill-attacks-"))  # pytest's tmp_path is root's alone
    try:
        _corpus(tmp_path, who, hook)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _corpus(tmp_path: Path, who: str, hook: bool):
    tmp_path.chmod(0o755)
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)  # an escape as any user would leave a file here
    secret = tmp_path / "secret"
    secret.write_text(SECRET_TEXT)
    secret.chmod(0o644)
    if who == "root":
        cmd, root = [sys.executable, str(DRIVER)], str(ROOT)
    else:
        if not os.path.exists(SYSTEM_PYTHON) or not shutil.which("setpriv"):
            pytest.skip("needs the system Python and setpriv")
        root = str(_unprivileged_copy(tmp_path))
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, "-I", "-S",
               str(Path(root) / "tests" / "code" / "sandbox_driver.py")]
    listener = Listener()
    try:
        proc = subprocess.run(cmd + [root, str(outside), str(secret), str(listener.port), "1" if hook else "0"],
                              capture_output=True, text=True, timeout=600, cwd="/")
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    if who == "unprivileged" and not report["isolation"].startswith("jailed"):
        pytest.skip(f"this kernel gives an unprivileged user no jail: {report['isolation']}")
    assert report["isolation"].startswith("jailed"), report["isolation"]
    assert report["honest"] == [len(TESTS), None]  # the sandbox still runs honest code
    forged = {name: r for name, r in report["results"].items() if r[0] != 0}
    assert forged == {}, forged
    assert set(report["results"]) == {name for name, _ in ATTACKS}
    assert sorted(os.listdir(outside)) == [] and secret.read_text() == SECRET_TEXT
    assert listener.accepted == 0
    assert report["vm_hwm_kb"] < MAX_PARENT_RSS_KB, report["vm_hwm_kb"]


def test_the_corpus_covers_the_issue_attacks():
    names = {name for name, _ in ATTACKS}
    for needed in ("disarms_the_hook_then_escapes", "subinterpreter_has_no_hook", "pidfd_signals_the_parent",
                   "mkfifo_and_setxattr_outside", "atexit_writes_a_passing_line", "prints_a_passing_line_and_exits",
                   "rewrites_the_test_list_found_by_gc", "claims_99_tests_passed", "floods_stdout_300_mb",
                   "setsid_grandchild_keeps_writing", "always_equal_object", "patches_builtins_exec_and_assertionerror",
                   "settrace_skips_the_assertion", "proc_self_mem", "huge_allocation", "deep_recursion",
                   "ignores_sigxcpu_and_spins", "reads_the_parents_environment", "ctypes_setns_and_mount"):
        assert needed in names
