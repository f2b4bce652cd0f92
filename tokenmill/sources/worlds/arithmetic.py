"""Arithmetic world: multi-step integer problems solved as a chain of intermediate results.

Prompt:    "Compute step by step: start with 7, add 5, times 3, minus 4.\n"
Solution:  "7+5=12\n12*3=36\n36-4=32\nAnswer: 32"

Every intermediate result is a place where one wrong digit derails the answer — the
critical tokens later labelers look for. Verifier: the integer after the last
`Answer:` must equal the exact result (reward 1/0); no `Answer:` line is `invalid`.

Step checker (`first_error`, the `process` label family's oracle): the i-th equation
`a op b = c` of the completion (spaces allowed, `x`/`×` for `*`) must be step i of the
exact chain, a = v_i, op = op_i, b = k_i, c = v_{i+1}. The first field that differs is the
first error, wherever later text goes. When every step is right, the number after the last
`Answer:` must be the result. Steps missing before `Answer:` make the `Answer:` the error.
A completion that stops before any error (truncated) has none. Lucky answers are caught:
`44*2=84 … Answer: 136` is correct to the verifier, and its error is the `84`.
"""

from __future__ import annotations

import random
import re

from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds.base import Instance, Verdict, World

_WORDS = {"+": "add", "-": "minus", "*": "times"}
_ANSWER = re.compile(r"Answer:\s*(-?\d+)")
_EQUATION = re.compile(r"(-?\d+)\s*([-+*x×])\s*(-?\d+)\s*=\s*(-?\d+)")
_OP = {"x": "*", "×": "*"}


class ArithmeticWorld(World):
    name = "arithmetic"
    # what a chat model is told (models/chat.py): the verifier reads the last `Answer:`
    chat_instruction = "Work it out one step per line, then give the final result on the last line as `Answer: <number>`."

    def __init__(self, min_steps: int = 2, max_steps: int = 4):
        self.min_steps, self.max_steps = min_steps, max_steps

    def _instance(self, rng: random.Random) -> Instance:
        value = rng.randint(2, 60)
        start = value
        steps: list[tuple[str, int]] = []
        lines: list[str] = []
        for _ in range(rng.randint(self.min_steps, self.max_steps)):
            ops = ["+", "-"] + (["*"] if value <= 60 else [])
            op = rng.choice(ops)
            k = rng.randint(2, 9) if op == "*" else rng.randint(1, 60)
            if op == "-" and k > value:
                op = "+"
            new = value + k if op == "+" else value - k if op == "-" else value * k
            lines.append(f"{value}{op}{k}={new}")
            steps.append((op, k))
            value = new
        phrase = ", ".join(f"{_WORDS[op]} {k}" for op, k in steps)
        prompt = f"Compute step by step: start with {start}, {phrase}.\n"
        solution = "\n".join(lines) + f"\nAnswer: {value}"
        return Instance(
            prompt=prompt,
            solution=solution,
            reference=str(value),
            meta={"start": start, "steps": [[op, k] for op, k in steps], "answer": value},
            key=prompt,
        )

    def first_error(self, prompt: Prompt, completion: str) -> tuple[int, int]:
        """(character index of the first error, its step: 0-based equation, len(steps) for the
        answer), or (−1, −1) where there is none (module docstring)."""
        value, steps = int(prompt.meta["start"]), prompt.meta["steps"]
        equations = list(_EQUATION.finditer(completion))
        answers = list(_ANSWER.finditer(completion))
        for i, (op, k) in enumerate(steps):
            if i >= len(equations):  # the chain stops short: the answer (if any) is given too early
                return (answers[-1].start(), i) if answers else (-1, -1)
            m = equations[i]
            new = value + k if op == "+" else value - k if op == "-" else value * k
            expected = (value, op, k, new)
            got = (int(m.group(1)), _OP.get(m.group(2), m.group(2)), int(m.group(3)), int(m.group(4)))
            for field, (want, have) in enumerate(zip(expected, got)):
                if want != have:
                    return m.start(field + 1), i
            value = new
        if answers and int(answers[-1].group(1)) != value:
            return answers[-1].start(1), len(steps)
        return -1, -1

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        expected = int(prompt.meta["answer"]) if "answer" in prompt.meta else int(prompt.reference)
        found = _ANSWER.findall(completion)
        if not found:
            return Verdict(0.0, "invalid", {"expected": expected, "answer": None})
        answer = int(found[-1])
        ok = answer == expected
        return Verdict(float(ok), "correct" if ok else "incorrect", {"expected": expected, "answer": answer})
