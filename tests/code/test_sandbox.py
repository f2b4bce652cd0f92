"""Hostile generated code ends as a failed verdict with its reason — never harm."""

import os
import pwd
import socket
import sys
import threading
from pathlib import Path

from tokenmill.code.sandbox import Limits, interpreter, network_isolation, run_tests
from tokenmill.sources.worlds import get_world

TESTS = ["assert f(1) == 2", "assert f(2) == 3"]
FAST = Limits(wall_s=4, cpu_s=2, memory_mb=256)


def test_honest_code_passes_its_tests():
    assert run_tests("def f(x):\n    return x + 1\n", TESTS, FAST) == (2, None)
    passed, err = run_tests("def f(x):\n    return x\n", TESTS, FAST)
    assert passed == 0 and err.startswith("AssertionError")


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    assert run_tests("while True:\n    pass\n", TESTS, FAST) == (0, "cpu time limit: killed after 2 s of CPU")


def test_sleeping_code_is_stopped_by_the_wall_clock():
    passed, err = run_tests("import time\ntime.sleep(60)\n", TESTS, Limits(wall_s=1.5, cpu_s=2))
    assert passed == 0 and err.startswith("timeout")


def test_fork_bomb_starts_no_process():
    passed, err = run_tests("import os\nwhile True:\n    os.fork()\n", TESTS, FAST)
    assert passed == 0 and "os.fork is not allowed" in err
    passed, err = run_tests("import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])\n", TESTS, FAST)
    assert passed == 0 and "not allowed" in err


def test_memory_hog_hits_the_memory_limit():
    passed, err = run_tests("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", TESTS, FAST)
    assert passed == 0 and err.startswith("memory limit")


def test_writing_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / "evil.txt"
    passed, err = run_tests(f"open({str(target)!r}, 'w').write('x')\n", TESTS, FAST)
    assert passed == 0 and "no access" in err and not target.exists()
    passed, err = run_tests(f"import os\nos.remove({str(tmp_path)!r})\n", TESTS, FAST)
    assert passed == 0 and "no access" in err and tmp_path.exists()
    # inside its own directory it may write
    assert run_tests("open('scratch.txt', 'w').write('ok')\ndef f(x):\n    return x + 1\n", TESTS, FAST) == (2, None)


def test_opening_a_socket_reaches_nothing():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(_accept(server)))
    t.start()
    passed, err = run_tests(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n", TESTS, FAST)
    t.join()
    server.close()
    assert passed == 0 and "not allowed" in err and accepted == [None]


def _accept(server):
    try:
        conn, _ = server.accept()
        conn.close()
        return "connected"
    except OSError:
        return None


def test_reading_the_lake_is_refused(arith_lake):
    parquet = next(arith_lake.rglob("*.parquet"))
    passed, err = run_tests(f"print(open({str(parquet)!r}, 'rb').read(4))\n", TESTS, FAST)
    assert passed == 0 and "no access" in err
    passed, err = run_tests(f"import os\nprint(os.listdir({str(arith_lake)!r}))\n", TESTS, FAST)
    assert passed == 0 and "no access" in err


def test_network_namespace_where_the_kernel_allows_it():
    prefix = network_isolation()
    assert prefix == [] or prefix[0] == "unshare"


def test_code_world_verdicts_carry_the_sandbox_reason():
    world = get_world("code")
    prompt = world.prompts(1)[0]
    name = prompt.meta["tests"][0].split("(")[0].replace("assert ", "").strip()
    v = world.verify(prompt, f"def {name}(x):\n    while True:\n        pass\n")
    assert v.verdict == "incorrect" and v.reward == 0
    assert "limit" in v.detail["error"] or "timeout" in v.detail["error"]
    v = world.verify(prompt, "import os\nos.fork()\n")
    assert v.verdict == "incorrect" and "os.fork is not allowed" in v.detail["error"]


def test_run_by_root_the_code_runs_as_nobody_under_a_binding_process_limit():
    """Where `nobody` can run an installation (a system Python), root's sandbox drops to it;
    where it cannot (this venv's Python may live under /root), it stays root and says why."""
    me = interpreter()
    if os.geteuid() != 0:
        assert me.drop == () and "not root" in me.user
        return
    nobody = pwd.getpwnam("nobody").pw_uid
    system = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
    for python in filter(None, {sys.executable, system}):
        interp = interpreter(python)
        if not interp.drop:
            assert "cannot" in interp.user
            code = "import os\nuid = os.getuid()\n"
            assert run_tests(code, ["assert uid == 0"], FAST, python=python) == (1, None)
            continue
        before = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and p.stat().st_uid == nobody)
        code = "import os, resource, collections.abc\nuid = os.getuid()\nnproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]\n"
        tests = [f"assert uid == {nobody}, uid", f"assert nproc <= {before + 2}, nproc"]
        assert run_tests(code, tests, FAST, python=python) == (2, None)  # and it reads its standard library
        passed, err = run_tests("open('/root/.probe', 'w')\n", TESTS, FAST, python=python)
        assert passed == 0 and "no access" in err
    assert system is None or interpreter(system).drop, "a system Python is readable by everyone"


def test_the_sandbox_python_can_be_chosen_by_environment(tmp_path, monkeypatch):
    link = tmp_path / "python-for-generated-code"
    link.symlink_to(sys.executable)
    monkeypatch.setenv("TOKENMILL_SANDBOX_PYTHON", str(link))
    assert interpreter().python == str(link)
    assert run_tests("import sys\nexe = sys.executable\n", [f"assert exe == {str(link)!r}, exe"], FAST) == (1, None)
    monkeypatch.delenv("TOKENMILL_SANDBOX_PYTHON")
    assert interpreter().python == sys.executable
