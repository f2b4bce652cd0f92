"""Code world: small Python function tasks with unit tests.

Prompt:    "Write a Python function g(x) that adds 13 to x, then multiplies it by 4, and returns it.\n"
Solution:  "def g(x):\n    x = x + 13\n    x = x * 4\n    return x\n"

Half the tasks are one-liners over ints, lists and strings; the other half chain one to
three integer steps, so held-out prompts are new compositions, not just new constants.
A chain step may state its constant as a sum or product ("adds 3 times 7 to x" →
`x = x + 21`): writing the right code then takes the arithmetic the models learned.

Verifier: the completion (or its first fenced block) must parse (`ast.parse`); then the
world's unit tests run against it in the sandbox (`tokenmill/code/sandbox/`: the code in a
jail of its own namespaces without privileges, the tests in a separate harness that only
gets plain values back, so the code cannot write its own verdict). reward = passed /
total tests, clamped to [0, 1]; `correct` iff all pass; code that does not parse is
`invalid`; hostile code ends as a failed verdict with the reason.
"""

from __future__ import annotations

import ast
import math
import random
import re

from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds.base import Instance, Verdict, World

# (description, body, arg kind, expected(arg, k) -> value); `k` is the task's parameter.
_TASKS = [
    ("returns x plus {k}", "return x + {k}", "int", lambda x, k: x + k),
    ("returns x minus {k}", "return x - {k}", "int", lambda x, k: x - k),
    ("returns x times {k}", "return x * {k}", "int", lambda x, k: x * k),
    ("returns the square of x plus {k}", "return x * x + {k}", "int", lambda x, k: x * x + k),
    ("returns True if x is divisible by {k}", "return x % {k} == 0", "int", lambda x, k: x % k == 0),
    ("returns the larger of x and {k}", "return max(x, {k})", "int", lambda x, k: max(x, k)),
    ("returns the smaller of x and {k}", "return min(x, {k})", "int", lambda x, k: min(x, k)),
    ("returns the sum of the list x plus {k}", "return sum(x) + {k}", "list", lambda x, k: sum(x) + k),
    ("returns the length of the list x times {k}", "return len(x) * {k}", "list", lambda x, k: len(x) * k),
    ("returns how many items of the list x are greater than {k}",
     "return len([v for v in x if v > {k}])", "list", lambda x, k: len([v for v in x if v > k])),
    ("returns the string x repeated {k} times", "return x * {k}", "str", lambda x, k: x * k),
    ("returns the first {k} characters of the string x", "return x[:{k}]", "str", lambda x, k: x[:k]),
]
_NAMES = ["f", "g", "h", "solve", "compute"]
# chained integer steps: (phrase, code line, apply)
_STEPS = [
    ("adds {k} to x", "x = x + {k}", lambda x, k: x + k),
    ("subtracts {k} from x", "x = x - {k}", lambda x, k: x - k),
    ("multiplies x by {k}", "x = x * {k}", lambda x, k: x * k),
    ("takes x modulo {k}", "x = x % {k}", lambda x, k: x % k),
    ("floor-divides x by {k}", "x = x // {k}", lambda x, k: x // k),
]
_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)


def extract_code(completion: str) -> str:
    m = _FENCE.search(completion)
    return m.group(1) if m else completion


def _args(kind: str, rng: random.Random) -> list:
    if kind == "int":
        return [rng.randint(-20, 50) for _ in range(4)]
    if kind == "list":
        return [[rng.randint(0, 9) for _ in range(rng.randint(0, 5))] for _ in range(4)]
    return ["".join(rng.choice("abcxyz") for _ in range(rng.randint(0, 5))) for _ in range(4)]


class CodeWorld(World):
    name = "code"
    timeout_s: float = 5.0
    chat_instruction = "Reply with the Python function only, in one ```python code block."

    def _instance(self, rng: random.Random) -> Instance:
        if rng.random() < 0.5:
            return self._chain(rng)
        t = rng.randrange(len(_TASKS))
        desc, body, kind, fn = _TASKS[t]
        k = rng.randint(2, 19)
        name = rng.choice(_NAMES)
        prompt = f"Write a Python function {name}(x) that {desc.format(k=k)}.\n"
        solution = f"def {name}(x):\n    {body.format(k=k)}\n"
        tests = [f"assert {name}({a!r}) == {fn(a, k)!r}" for a in _args(kind, rng)]
        meta = {"task": t, "k": k, "entry_point": name, "tests": tests}
        return Instance(prompt, solution, solution, meta, key=prompt)

    def _chain(self, rng: random.Random) -> Instance:
        name = rng.choice(_NAMES)
        steps, phrases = [], []
        for _ in range(rng.randint(1, 3)):
            s, k, said_k = rng.randrange(len(_STEPS)), rng.randint(2, 20), None
            if rng.random() < 0.5:  # the constant as an expression the model must evaluate
                a = rng.randint(2, 9)
                if rng.random() < 0.5:
                    b = rng.randint(2, 9)
                    k, said_k = a * b, f"{a} times {b}"
                else:
                    b = rng.randint(2, 30)
                    k, said_k = a + b, f"{a} plus {b}"
            steps.append((s, k))
            phrases.append(_STEPS[s][0].format(k=said_k or k))
        said = phrases[0] if len(phrases) == 1 else ", then ".join(phrases)
        prompt = f"Write a Python function {name}(x) that {said}, and returns it.\n"
        body = "".join(f"    {_STEPS[s][1].format(k=k)}\n" for s, k in steps)
        solution = f"def {name}(x):\n{body}    return x\n"
        tests = []
        for a in _args("int", rng):
            v = a
            for s, k in steps:
                v = _STEPS[s][2](v, k)
            tests.append(f"assert {name}({a!r}) == {v!r}")
        meta = {"task": "chain", "steps": steps, "entry_point": name, "tests": tests}
        return Instance(prompt, solution, solution, meta, key=prompt)

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        return verify_code(extract_code(completion), list(prompt.meta.get("tests", [])), self.timeout_s)


def verify_code(code: str, tests: list[str], timeout_s: float) -> Verdict:
    """The code verifier (the module docstring's rule), shared by this world and the
    `code-tests` verifier (`tasks/verifiers.py`): `invalid` if `code` does not parse, else
    reward = passed / total of `tests` run in the sandbox. Detail: parsed, passed, total, error."""
    try:
        ast.parse(code)
    except SyntaxError as e:
        return Verdict(0.0, "invalid", {"parsed": False, "error": f"SyntaxError: {e.msg} (line {e.lineno})"})
    passed, error = run_tests(code, tests, timeout_s)
    total = len(tests)
    reward = min(1.0, max(0.0, passed / total)) if total else 0.0  # [0, 1] whatever the count says
    verdict = "correct" if total and passed == total else "incorrect"
    return Verdict(reward, verdict, {"parsed": True, "passed": passed, "total": total, "error": error})


def run_tests(code: str, tests: list[str], timeout_s: float) -> tuple[int, str | None]:
    """Run `tests` against `code` in the sandbox (`code/sandbox/`); (tests passed, first error)."""
    from tokenmill.code.sandbox import Limits
    from tokenmill.code.sandbox import run_tests as sandboxed

    return sandboxed(code, tests, Limits(wall_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s))))
