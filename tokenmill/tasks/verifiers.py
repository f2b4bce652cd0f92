"""The verifiers a prompt can name, by name: `VERIFIERS` and `get_verifier`.

A verifier is `fn(prompt, completion) -> Verdict` (reward in [0, 1]; verdict correct |
incorrect | invalid). Each puts what it read from the completion in `detail["extracted"]`
and what it checked that against in `detail["expected"]`. `invalid` means the check could
not be made (no reference, a pattern that does not compile, code that does not parse, no
tests); a wrong or missing answer is `incorrect`.

Answer text (`text`, `regex`): the text after the last `Answer:` or `answer is` (any case,
`**Answer:**` too) if the completion has one, else the whole completion.

- `reference-match`: the answer (the text after the last `Answer:`, else the last non-empty
  line) must equal `prompt.reference` after whitespace/case normalisation.
- `text`: short answers as real models write them. Answer text and reference are
  normalised (NFKC, casefold, `n't` → ` not`, accents dropped so "Bogota" == "Bogotá") and
  split into words (letters/digits; markdown and punctuation only separate words). The
  reference's words must occur as a whole-word run on one line of the answer text
  ("Madridista" is not "Madrid"); numbers compare by value ("42" == "42.0" == "42.00",
  "1,000" == "1000", but "42" != "42.5" or "420"; fractions are the `math` verifier's job).
  An occurrence with a negation (not, no, never, neither, nor, isnt, wasnt, … and every
  `n't`) among the 3 words before it, in the same clause (a `,;:.!?` or "but" ends the
  look-back), does not count: "It is not Madrid." fails, "No, it's Madrid." passes. Any
  other occurrence passes, so a reply naming two answers passes if either is right.
- `math`: `math-verify` decides. Gold = the reference (after its last `####`, GSM8K
  style), parsed as is or else as `$reference$`; prediction = the completion (after its
  last `####`), parsed for \\boxed{}, LaTeX and plain expressions; correct iff they are
  equal (3/4 == 0.75, \\frac{1}{2} == 1/2). A completion with nothing to parse is
  `incorrect` (extracted null): the model gave no answer, the check itself was made.
  math-verify's timeouts use `signal.alarm`, which works only on the main thread, and the
  verify stage runs verifiers in threads: they are switched off, so a pathological
  expression is not interrupted.
- `regex`: `prompt.meta["pattern"]`, else `prompt.reference`, searched (`re.S`) in the last
  20,000 characters of the answer text; correct iff it matches. The cap bounds the work of
  a slow pattern on a long reply (it cannot bound catastrophic backtracking: `re` has no
  timeout). A pattern that does not compile is `invalid`.
- `code-tests`: the code (`extract_code`: the first fenced block, else the completion) runs
  against `prompt.meta["tests"]` (asserts: a list, or one string) and, HumanEval style,
  `meta["test"] + "\\ncheck(<meta["entry_point"]>)"` as one more test, in the sandbox, with
  the code world's rule (`verify_code`: invalid if it does not parse, reward = passed /
  total, correct iff all pass).
- `world:<name>`: that world's own exact verifier.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Callable

from tokenmill.errors import TokenmillError
from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds import WORLDS, Verdict, shared_world
from tokenmill.sources.worlds.code import extract_code, verify_code
from tokenmill.sources.worlds.humaneval import check_test

Verifier = Callable[[Prompt, str], Verdict]

REGEX_MAX_CHARS = 20_000  # the answer text a pattern is searched in (its end: where answers are)
CODE_TIMEOUT_S = 5.0  # wall time of one completion's tests
_SHOWN_MAX = 500  # characters of answer text kept in `detail["extracted"]`

_ANSWER_AT = re.compile(r"\banswer(?:\s+is\b|[*_]*\s*:)", re.I)


def answer_text(completion: str) -> str:
    """The text after the last `Answer:` / `answer is`, else the whole completion."""
    marks = list(_ANSWER_AT.finditer(completion))
    return completion[marks[-1].end():] if marks else completion


def _shown(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SHOWN_MAX else "…" + text[-_SHOWN_MAX:]


def _invalid(why: str, expected=None) -> Verdict:
    return Verdict(0.0, "invalid", {"extracted": None, "expected": expected, "error": why})


# ------------------------------------------------------------------ reference-match

_ANSWER = re.compile(r"Answer:\s*(.+)")


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


def reference_match(reference: str, completion: str) -> Verdict:
    """The exact rule: the text after the last `Answer:`, else the last non-empty line,
    equals `reference` after whitespace/case normalisation."""
    found = _ANSWER.findall(completion)
    lines = [ln for ln in completion.splitlines() if ln.strip()]
    answer = found[-1] if found else (lines[-1] if lines else "")
    ok = _norm(answer) == _norm(reference)
    return Verdict(float(ok), "correct" if ok else "incorrect", {"extracted": answer.strip(), "expected": reference})


def _reference_match(prompt: Prompt, completion: str) -> Verdict:
    if prompt.reference is None:
        return _invalid("the prompt has no reference answer")
    return reference_match(prompt.reference, completion)


# ------------------------------------------------------------------ text

# a number (not glued to letters or digits: "42nd" is a word), else a run of letters/digits
_TOKEN = re.compile(r"(?<![^\W_])-?\d+(?:,\d{3})*(?:\.\d+)?(?![^\W_])|[^\W_]+")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_CLAUSE_END = re.compile(r"[,;:.!?]")
_NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "isnt", "wasnt", "arent", "werent", "dont",
                        "doesnt", "didnt", "cannot"})
_LOOK_BACK = 3


def _words(line: str) -> list[tuple[str, bool]]:
    """(word, a clause ends just before it) for each word of `line`, normalised."""
    text = unicodedata.normalize("NFKC", line).casefold()
    text = re.sub(r"n['’]t\b", " not", text)  # isn't, wasn't, don't: the negation is a word of its own
    text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    out, end = [], 0
    for m in _TOKEN.finditer(text):
        out.append((m.group(), bool(_CLAUSE_END.search(text[end:m.start()]))))
        end = m.end()
    return out


def _same(a: str, b: str) -> bool:
    if _NUMBER.fullmatch(a) and _NUMBER.fullmatch(b):
        try:
            return Decimal(a.replace(",", "")) == Decimal(b.replace(",", ""))
        except InvalidOperation:
            return False
    return a == b


def _negated(words: list[tuple[str, bool]], i: int) -> bool:
    """A negation among the `_LOOK_BACK` words before words[i], in its clause."""
    for k in range(i, max(i - _LOOK_BACK, 0), -1):
        if words[k][1] or words[k - 1][0] == "but":  # the clause starts at words[k]
            return False
        if words[k - 1][0] in _NEGATIONS:
            return True
    return False


def text_match(prompt: Prompt, completion: str) -> Verdict:
    """The `text` rule (module docstring): the reference's words, un-negated, on a line of
    the answer text."""
    if prompt.reference is None:
        return _invalid("the prompt has no reference answer")
    ref = [w for w, _ in _words(" ".join(prompt.reference.split()))]
    if not ref:
        return _invalid("the reference answer has no words", prompt.reference)
    searched = answer_text(completion)
    for line in searched.splitlines():
        words = _words(line)
        for i in range(len(words) - len(ref) + 1):
            if all(_same(words[i + j][0], r) for j, r in enumerate(ref)) and not _negated(words, i):
                return Verdict(1.0, "correct", {"extracted": _shown(line), "expected": prompt.reference,
                                                "matched": True})
    return Verdict(0.0, "incorrect", {"extracted": _shown(searched), "expected": prompt.reference, "matched": False})


# ------------------------------------------------------------------ math


class _NoTimeoutWarning(logging.Filter):
    """Drops math-verify's "Timeout is disabled" warning: switching it off is deliberate here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


@lru_cache(maxsize=None)
def _math_verify():
    import math_verify  # imported on first use: it brings sympy

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_NoTimeoutWarning())
    return math_verify


def _after_hashes(text: str) -> str:
    return text.rsplit("####", 1)[1] if "####" in text else text


def math_match(prompt: Prompt, completion: str) -> Verdict:
    """The `math` rule (module docstring): math-verify's equality of the parsed reference and
    the parsed completion, with its signal-based timeouts off (the stage runs in threads)."""
    mv = _math_verify()
    if prompt.reference is None:
        return _invalid("the prompt has no reference answer")
    expected = _after_hashes(prompt.reference).strip()
    gold = mv.parse(expected, parsing_timeout=None) or mv.parse(f"${expected}$", parsing_timeout=None)
    if not gold:
        return _invalid("math-verify cannot parse the reference answer", expected)
    pred = mv.parse(_after_hashes(completion), parsing_timeout=None)
    if not pred:
        return Verdict(0.0, "incorrect", {"extracted": None, "expected": expected})
    ok = mv.verify(gold, pred, timeout_seconds=None)
    return Verdict(float(ok), "correct" if ok else "incorrect", {"extracted": str(pred[0]), "expected": expected})


# ------------------------------------------------------------------ regex


def regex_match(prompt: Prompt, completion: str) -> Verdict:
    """The `regex` rule (module docstring): `meta["pattern"]` (else the reference) found in
    the answer text's last `REGEX_MAX_CHARS` characters."""
    pattern = prompt.meta.get("pattern", prompt.reference)
    if pattern is None:
        return _invalid("no pattern: give it as the reference or with --meta-field pattern=FIELD")
    try:
        compiled = re.compile(str(pattern), re.S)
    except re.error as e:
        return _invalid(f"the pattern does not compile: {e}", pattern)
    m = compiled.search(answer_text(completion)[-REGEX_MAX_CHARS:])
    return Verdict(float(bool(m)), "correct" if m else "incorrect",
                   {"extracted": _shown(m.group(0)) if m else None, "expected": pattern})


# ------------------------------------------------------------------ code-tests


def _tests(meta: dict) -> list[str]:
    tests = meta.get("tests") or []
    tests = [tests] if isinstance(tests, str) else [str(t) for t in tests]
    if meta.get("test") and meta.get("entry_point"):  # HumanEval: `def check(candidate)` + the function's name
        tests.append(check_test(meta))
    return tests


def code_tests(prompt: Prompt, completion: str) -> Verdict:
    """The `code-tests` rule (module docstring): the code world's verifier over the prompt's tests."""
    tests = _tests(prompt.meta)
    if not tests:
        return _invalid("the prompt has no tests: give them with --meta-field tests=FIELD (asserts), or "
                        "test=FIELD and entry_point=FIELD (HumanEval style)")
    code = extract_code(completion)
    v = verify_code(code, tests, CODE_TIMEOUT_S)
    return Verdict(v.reward, v.verdict, {**v.detail, "extracted": code, "expected": tests})


# ------------------------------------------------------------------ registry

VERIFIERS: dict[str, Verifier] = {
    "reference-match": _reference_match,
    "text": text_match,
    "math": math_match,
    "regex": regex_match,
    "code-tests": code_tests,
}


@lru_cache(maxsize=None)
def _world_verifier(name: str) -> Verifier:
    return shared_world(name).verify  # one world instance (and one bound method) per name, not one per rollout


def get_verifier(name: str) -> Verifier:
    """The verifier called `name`: one of `VERIFIERS`, or `world:<world>`."""
    if name in VERIFIERS:
        return VERIFIERS[name]
    if name.startswith("world:") and name[len("world:"):] in WORLDS:
        return _world_verifier(name[len("world:"):])
    choices = ", ".join([*VERIFIERS, *(f"world:{w}" for w in WORLDS)])
    raise TokenmillError(f"unknown verifier {name!r}", fix=f"choose one of: {choices}")
