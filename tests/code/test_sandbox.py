"""The sandbox runs generated code against its tests; verdicts come from the harness."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenmill.code.sandbox import Limits, isolation, run_tests
from tokenmill.code.sandbox.jail import RUN_UIDS
from tokenmill.code.sandbox.wire import WireError, decode, encode
from tokenmill.sources.worlds import get_world

TESTS = ["assert f(1) == 2", "assert f(2) == 3"]
FAST = Limits(wall_s=6, cpu_s=2, memory_mb=256)


def test_honest_code_passes_and_wrong_code_fails():
    assert run_tests("def f(x):\n    return x + 1\n", TESTS, FAST) == (2, None)
    passed, err = run_tests("def f(x):\n    return x\n", TESTS, FAST)
    assert passed == 0 and err.startswith("AssertionError")


def test_humaneval_style_check_runs_in_the_harness():
    check = "def check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n    assert candidate([]) == []\n"
    assert run_tests("def sort_list(xs):\n    return sorted(xs)\n", [check + "check(sort_list)"], FAST) == (1, None)
    assert run_tests("def sort_list(xs):\n    return xs\n", [check + "check(sort_list)"], FAST)[0] == 0


def test_exceptions_cross_as_their_builtin_type():
    tests = ["try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"]
    assert run_tests("def f(x):\n    if x < 0:\n        raise ValueError('negative x')\n", tests, FAST) == (1, None)


def test_plain_values_cross_and_arguments_are_updated_in_place():
    code = ("def f(xs):\n    xs.sort()\n    return {'n': len(xs), 't': (1.5, None, b'ab'), 's': {1, 2}}\n"
            "def g(n):\n    for i in range(n):\n        yield i * i\n"
            "LIMIT = 7\n")
    tests = ["xs = [3, 1, 2]\nassert f(xs) == {'n': 3, 't': (1.5, None, b'ab'), 's': {1, 2}}\nassert xs == [1, 2, 3]",
             "assert list(g(4)) == [0, 1, 4, 9]", "assert LIMIT == 7"]
    assert run_tests(code, tests, FAST) == (3, None)


def test_a_crash_fails_its_test_and_the_next_test_gets_a_fresh_process():
    code = "import os\ndef f(x):\n    if x == 1:\n        os._exit(3)\n    return x + 1\n"
    passed, err = run_tests(code, TESTS, FAST)
    assert passed == 1 and "ended (exit status 3)" in err


def test_prints_go_nowhere():
    code = "print('[2, null]')\ndef f(x):\n    print('noise', x)\n    return x + 1\n"
    assert run_tests(code, TESTS, FAST) == (2, None)


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    assert run_tests("while True:\n    pass\n", TESTS, FAST) == (0, "cpu time limit: killed after 2 s of CPU")


def test_sleeping_code_is_stopped_by_the_wall_clock():
    start = time.monotonic()
    passed, err = run_tests("import time\ntime.sleep(60)\n", TESTS, Limits(wall_s=1.5, cpu_s=2))
    assert passed == 0 and err.startswith("timeout") and time.monotonic() - start < 10


def test_memory_hog_hits_the_memory_limit():
    passed, err = run_tests("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", TESTS, FAST)
    assert passed == 0 and err.startswith("memory limit")


def test_code_world_verdicts_carry_the_sandbox_reason():
    world = get_world("code")
    prompt = world.prompts(1)[0]
    name = prompt.meta["entry_point"]
    v = world.verify(prompt, f"def {name}(x):\n    while True:\n        pass\n")
    assert v.verdict == "incorrect" and v.reward == 0
    assert "limit" in v.detail["error"] or "timeout" in v.detail["error"]
    v = world.verify(prompt, "import os\nos.fork()\n")
    assert v.verdict == "incorrect" and "os.fork is not allowed" in v.detail["error"]
    gold = world.instances(1)[0]
    assert gold.prompt == prompt.prompt
    assert world.verify(prompt, f"```python\n{gold.solution}```").reward == 1.0


def test_this_machine_jails_the_code():
    """Root (CI, containers) always can; other users where user namespaces are allowed."""
    iso = isolation()
    if os.geteuid() == 0:
        assert iso.jailed, iso.why
    if not iso.jailed:
        pytest.skip(iso.why)
    assert iso.why.startswith("jailed")


def _run_uid_processes() -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if RUN_UIDS[0] <= p.stat().st_uid < RUN_UIDS[1]:
                    found.append(p.name)
            except OSError:
                pass
    return found


def test_every_descendant_dies_with_the_run():
    if not (isolation().jailed and os.geteuid() == 0):
        pytest.skip("run uids exist only in a jail started by root")
    # a setsid grandchild that would outlive a process-group kill, with room to fork
    code = ("import os, time\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\n"
            "def f(x):\n    return x + 1\n")
    assert run_tests(code, TESTS, Limits(wall_s=6, cpu_s=2, processes=4, hook=False)) == (2, None)
    time.sleep(0.2)
    assert _run_uid_processes() == []


def test_the_jail_shows_no_host_files_and_a_read_only_root():
    if not isolation().jailed:
        pytest.skip(isolation().why)
    code = ("import os\n"
            "top = sorted(os.listdir('/'))\n"
            "def writable(p):\n    try:\n        open(p, 'w').close()\n        return True\n"
            "    except OSError:\n        return False\n"
            "w = [writable(p) for p in ('/x', '/usr/x', '/sandbox/x')]\n")
    tests = ["assert set(top) <= {'usr', 'lib', 'lib64', 'lib32', 'libx32', 'bin', 'sbin', 'etc', 'dev', 'sandbox', "
             "'root', 'opt', 'home'}, top", "assert w == [False, False, True], w"]
    assert run_tests(code, tests, Limits(wall_s=6, hook=False)) == (2, None)


def test_the_sandbox_python_can_be_chosen_by_environment(monkeypatch):
    system = "/usr/bin/python3"
    if not os.path.exists(system):
        pytest.skip("no system Python")
    monkeypatch.setenv("TOKENMILL_SANDBOX_PYTHON", system)
    assert isolation().python == os.path.realpath(system)
    assert run_tests("import sys\nexe = sys.executable\n", [f"assert exe == {os.path.realpath(system)!r}, exe"],
                     FAST) == (1, None)
    monkeypatch.delenv("TOKENMILL_SANDBOX_PYTHON")
    assert isolation().python == os.path.realpath(sys.executable)


def test_wire_rebuilds_plain_values_and_refuses_everything_else():
    value = [1, -2**80, 1.5, float("inf"), "s", b"\x00", None, True, (1, [2]), {"k": {3}}, frozenset({4}), 1 + 2j]
    assert decode(encode(value)) == value
    assert [type(v) for v in decode(encode(value))] == [type(v) for v in value]

    class Sneaky(int):
        def __eq__(self, other):
            return True

    for bad in (Sneaky(1), object(), [lambda: 0], {"k": object()}):
        with pytest.raises(WireError):
            encode(bad)
    for forged in (["i", 5], ["x"], "i", ["d", [[["l", []], ["n"]]]], ["l", [["i", "1"]] * 2, "extra"]):
        with pytest.raises(WireError):
            decode(forged)


def test_the_module_reports_how_code_runs_here():
    out = subprocess.run([sys.executable, "-m", "tokenmill.code.sandbox"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "self-test    ok" in out.stdout and "isolation" in out.stdout
