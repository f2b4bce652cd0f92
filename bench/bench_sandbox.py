"""What the sandbox's isolation costs per verdict: `run_tests` against an unisolated baseline.

    python bench/bench_sandbox.py [--runs 30] [--tests 4]

The same code-world task (a correct `f`, `--tests` assertions) three ways, one after the
other, best of `--runs` each:

* baseline   one `python -I -S -c` subprocess that execs the code and the tests in one
             interpreter — what a verifier without isolation pays (the old in-process design)
* unjailed   `run_tests` with the jail forced off (harness + candidate processes, wire,
             audit hook; the fallback where namespaces are refused)
* jailed     `run_tests` as it runs here (namespaces, tmpfs root, privilege drop)

Printed: ms per verdict and the ratio to the baseline. The jail's extra cost is process
start-up (`unshare`, a setup interpreter, the candidate's interpreter), not the tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--tests", type=int, default=4)
    args = ap.parse_args()

    from tokenmill.code.sandbox import Limits, isolation, run_tests
    from tokenmill.code.sandbox import jail

    code = "def f(x):\n    return x + 1\n"
    tests = [f"assert f({i}) == {i + 1}" for i in range(args.tests)]
    plain = code + "\n".join(tests) + "\nprint('ok')\n"

    def baseline():
        out = subprocess.run([sys.executable, "-I", "-S", "-c", plain], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "ok", out.stderr

    def sandboxed():
        assert run_tests(code, tests, Limits()) == (len(tests), None)

    iso = isolation()
    sides = {"baseline (one plain subprocess)": baseline}
    real = jail._isolation
    if iso.jailed:
        sides["jailed run_tests"] = sandboxed

    def unjailed():
        jail._isolation = lambda python, as_root: jail.Isolation(False, (), as_root, iso.python, iso.prefixes, "off")
        try:
            sandboxed()
        finally:
            jail._isolation = real

    sides["unjailed run_tests (harness + candidate, no namespaces)"] = unjailed
    best = {}
    for name, fn in sides.items():
        fn()  # warm-up (and the isolation probe)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best[name] = min(times)
    base = best["baseline (one plain subprocess)"]
    print(f"{iso.why}\n")
    print("| side | ms per verdict (best of %d) | ratio to baseline |" % args.runs)
    print("|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t * 1e3:.1f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
