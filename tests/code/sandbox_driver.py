"""Runs the adversarial corpus (attacks.py) through `run_tests` and prints one JSON object:
{"results": {attack: [passed, error]}, "honest": [passed, error], "vm_hwm_kb": peak RSS}.

    python sandbox_driver.py <import root> <outside dir> <secret file> <port> <hook: 0|1>

A subprocess of test_sandbox_attacks.py, as root with the project's Python and as an
unprivileged user with the system Python (`<import root>` then holds a copy of the sandbox
package and this directory), so its peak RSS is the sandbox's parent's alone.
"""

import json
import os
import sys

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "code"))

from attacks import ATTACKS, HONEST, TESTS, materialise  # noqa: E402

from tokenmill.code.sandbox import Limits, isolation, run_tests  # noqa: E402

outside, secret, port, hook = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
limits = Limits(wall_s=4, cpu_s=2, memory_mb=256, hook=hook)
results = {}
for name, code in ATTACKS:
    results[name] = run_tests(materialise(code, outside, secret, port, os.getpid()), TESTS, limits)
honest = run_tests(HONEST, TESTS, limits)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"results": results, "honest": honest, "vm_hwm_kb": hwm, "isolation": isolation().why,
                  "uid": os.getuid()}))
