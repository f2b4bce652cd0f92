"""An adversarial corpus for the sandbox: generated code as an attacker writes it.

Every attack defines a *wrong* `f` (the tests want f(x) = x + 1) and then tries to turn
that into a passing verdict, or to reach outside the sandbox. Placeholders, filled in by
`materialise`: OUTSIDE (a host directory, writable by everyone: an escape would leave a
file there), SECRET_FILE (a host file readable by everyone, holding SECRET_TEXT), PORT (a
loopback listener of the host), PPID (the test process's pid, as the host sees it).

Imported by test_sandbox_attacks.py and by its driver, which runs the corpus in a
subprocess — as root, and as an unprivileged user under the system Python — so this file
imports only the standard library.
"""

TESTS = ["assert f(1) == 2", "assert f(2) == 3"]
HONEST = "def f(x):\n    return x + 1\n"
WRONG = "def f(x):\n    return x\n"
SECRET_TEXT = "tokenmill-host-secret"



def _if(escaped: str) -> str:
    """An f that is right only when `escaped` holds: the verdict is the escape's witness."""
    return (f"def f(x):\n    try:\n        ok = {escaped}\n    except BaseException:\n        ok = False\n"
            "    return x + 1 if ok else x\n")


# (name, code); each is WRONG plus the attack, unless it defines f itself
ATTACKS = [
    # --- forged verdicts -------------------------------------------------------------
    ("atexit_writes_a_passing_line", WRONG + "import atexit, sys\n"
     "atexit.register(lambda: sys.__stdout__.write('\\n[2, null]\\n'))\n"),
    ("prints_a_passing_line_and_exits", WRONG + "import os, sys\n"
     "sys.__stdout__.write('\\n[2, null]\\n'); sys.__stdout__.flush()\nos._exit(0)\n"),
    ("claims_99_tests_passed", WRONG + "import os, sys\n"
     "for fd in range(0, 64):\n"
     "    try:\n        os.write(fd, b'\\n[99, null]\\n')\n    except OSError:\n        pass\n"),
    ("writes_fake_replies_ahead_to_every_fd", WRONG + "import os\n"
     "for fd in range(0, 64):\n"
     "    try:\n        os.write(fd, b'[\"ok\",[\"i\",\"2\"],null]\\n' * 4)\n    except OSError:\n        pass\n"),
    ("rewrites_the_test_list_found_by_gc", WRONG + "import gc\n"
     "for o in gc.get_objects():\n"
     "    if isinstance(o, list) and any(isinstance(t, str) and 'assert' in t for t in o):\n"
     "        o[:] = ['pass'] * len(o)\n"),
    ("always_equal_object", "class A:\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = object.__hash__\n"
     "def f(x):\n    return A()\n"),
    ("int_subclass_equal_to_everything", "class I(int):\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = int.__hash__\n"
     "def f(x):\n    return I(0)\n"),
    ("patches_builtins_exec_and_assertionerror", WRONG + "import builtins\n"
     "builtins.exec = lambda *a, **k: None\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"),
    ("settrace_skips_the_assertion", WRONG + "import sys\n"
     "def tracer(frame, event, arg):\n    frame.f_trace_lines = True\n    return tracer\n"
     "sys.settrace(tracer)\n"),
    ("raises_systemexit_zero", "def f(x):\n    raise SystemExit(0)\n"),
    ("returns_a_generator_of_the_wrong_value", "def f(x):\n    yield x\n"),
    ("finds_the_expected_values_in_its_memory", "import gc\n"
     "def f(x):\n"
     "    for o in gc.get_objects():\n"
     "        if isinstance(o, str) and o.startswith('assert f(' + repr(x) + ') == '):\n"
     "            return int(o.rsplit('== ', 1)[1])\n"
     "    return x\n"),
    # --- the audit hook disarmed, then escapes ---------------------------------------
    ("disarms_the_hook_then_escapes",
     "import gc\n"
     "for o in gc.get_objects():\n"
     "    if type(o).__name__ == 'function' and o.__name__ == 'hook':\n"
     "        try:\n            o.__code__ = (lambda e, a: None).__code__\n        except Exception:\n            pass\n"
     "import os\n"
     "for attempt in ("
     "lambda: open('OUTSIDE/pwned', 'w').write('x'),"
     "lambda: os.system('id > OUTSIDE/id'),"
     "lambda: os.kill(PPID, 15),"
     "lambda: open('/etc/shadow').read(),"
     "lambda: os.fork()):\n"
     "    try:\n        attempt()\n    except BaseException:\n        pass\n" + WRONG),
    ("reads_a_host_file", _if("open('SECRET_FILE').read() == 'SECRET_TEXT'")),
    ("reads_the_parents_environment", _if("len(open('/proc/PPID/environ').read()) > 0")),
    ("reads_etc_shadow", _if("len(open('/etc/shadow').read()) > 0")),
    ("sees_the_host_filesystem", _if("any(__import__('os').path.exists(p) for p in ('OUTSIDE', '/etc/passwd', '/proc/1'))")),
    ("writes_outside", WRONG + "open('OUTSIDE/pwned', 'w').write('x')\n"),
    ("mkfifo_and_setxattr_outside", WRONG + "import os\n"
     "for a in (lambda: os.mkfifo('OUTSIDE/fifo'), lambda: os.setxattr('OUTSIDE', 'user.x', b'1')):\n"
     "    try:\n        a()\n    except BaseException:\n        pass\n"),
    ("os_system", WRONG + "import os\nos.system('touch OUTSIDE/system')\n"),
    ("subinterpreter_has_no_hook", WRONG + "import _xxsubinterpreters as i\n"
     "i.run_string(i.create(), \"open('OUTSIDE/sub', 'w').write('x')\")\n"),
    ("pidfd_signals_the_parent", WRONG + "import os, signal\n"
     "signal.pidfd_send_signal(os.pidfd_open(PPID), signal.SIGTERM)\n"),
    ("kills_every_process_it_can", WRONG + "import os\nos.kill(-1, 9)\n"),
    ("ctypes_setns_and_mount", WRONG + "import ctypes\nlibc = ctypes.CDLL(None)\n"
     "fd = libc.open(b'/proc/1/ns/net', 0)\nlibc.setns(fd, 0)\n"
     "libc.mount(b'none', b'/sandbox', b'tmpfs', 0, None)\nlibc.unshare(0x10000000)\n"),
    ("connects_to_a_loopback_listener", "import socket\n"
     "def f(x):\n    socket.create_connection(('127.0.0.1', PORT), timeout=1)\n    return x + 1\n"),
    ("proc_self_mem", WRONG + "open('/proc/self/mem', 'wb')\n"),
    ("fork_bomb", WRONG + "import os\nwhile True:\n    os.fork()\n"),
    ("setsid_grandchild_keeps_writing", WRONG + "import os, time\n"
     "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
     "        for _ in range(100):\n            open('OUTSIDE/late', 'a').write('x'); time.sleep(0.1)\n"),
    # --- resources ---------------------------------------------------------------------
    ("floods_stdout_300_mb", WRONG + "import sys\nfor _ in range(3):\n    sys.stdout.write('x' * 10**8)\n"),
    ("floods_the_reply_channel", WRONG + "import os\n"
     "for fd in range(3, 16):\n"
     "    try:\n        os.write(fd, b'x' * (1 << 24))\n    except OSError:\n        pass\n"),
    ("returns_a_huge_value", "def f(x):\n    return [x] * (10**7)\n"),
    ("huge_allocation", WRONG + "x = bytearray(10**10)\n"),
    ("deep_recursion", "import sys\nsys.setrecursionlimit(10**7)\n"
     "def f(x):\n    return f(x + 1)\n"),
    ("ignores_sigxcpu_and_spins", WRONG + "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
     "while True:\n    pass\n"),
    ("sleeps_forever", WRONG + "import time\ntime.sleep(10**6)\n"),
    ("fills_its_disk", WRONG + "for i in range(100):\n    open(f'junk{i}', 'wb').write(b'x' * (1 << 22))\n"),
]


def materialise(code: str, outside: str, secret_file: str, port: int, ppid: int) -> str:
    return (code.replace("OUTSIDE", outside).replace("SECRET_FILE", secret_file).replace("SECRET_TEXT", SECRET_TEXT)
            .replace("PORT", str(port)).replace("PPID", str(ppid)))
