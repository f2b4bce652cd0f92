"""The named verifiers (`tasks/verifiers.py`) and how the verify stage picks one."""

import json
import threading

import pyarrow as pa
import pytest

from tokenmill.errors import TokenmillError
from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds import get_world
from tokenmill.tasks import verifiers
from tokenmill.tasks.verifiers import VERIFIERS, get_verifier
from tokenmill.tasks.verify import verifier_name, verify


def _p(reference=None, **meta) -> Prompt:
    return Prompt(source="file", prompt="q?", reference=reference, meta=meta)


def _check(name: str, prompt: Prompt, completion: str):
    return get_verifier(name)(prompt, completion)


# ------------------------------------------------------------------ registry


def test_registry_names_and_unknown_name():
    assert set(VERIFIERS) == {"reference-match", "text", "math", "regex", "code-tests"}
    assert get_verifier("world:arithmetic") is get_verifier("world:arithmetic")  # one world instance
    with pytest.raises(TokenmillError) as e:
        get_verifier("exact")
    assert "unknown verifier 'exact'" in str(e.value) and "choose one of: reference-match, text" in e.value.fix


def test_reference_match_keeps_the_exact_rule():
    v = _check("reference-match", _p("42"), "6*7=42\nAnswer: 42")
    assert (v.verdict, v.detail) == ("correct", {"extracted": "42", "expected": "42"})
    assert _check("reference-match", _p("42"), "The answer is 42.").verdict == "incorrect"  # exact, unlike `text`
    assert _check("reference-match", _p(), "42").verdict == "invalid"


# ------------------------------------------------------------------ text


@pytest.mark.parametrize("reply", ["Madrid", "Madrid.", "Answer: **Madrid**", "The capital of Spain is Madrid.",
                                   "madrid", "It's Madrid!", "No, it's Madrid.", "Not Barcelona but Madrid.",
                                   "Barcelona? No.\nAnswer: Madrid"])
def test_text_accepts(reply):
    v = _check("text", _p("Madrid"), reply)
    assert (v.reward, v.verdict, v.detail["matched"], v.detail["expected"]) == (1.0, "correct", True, "Madrid")


@pytest.mark.parametrize("reply", ["not Madrid", "It is not Madrid.", "It isn't Madrid", "Barcelona",
                                   "The capital of Spain is Barcelona.", "Madridista", "", "Madrid?\nAnswer: Barcelona"])
def test_text_rejects(reply):
    v = _check("text", _p("Madrid"), reply)
    assert (v.reward, v.verdict, v.detail["matched"]) == (0.0, "incorrect", False)


def test_text_detail_is_the_matching_line_or_the_text_searched():
    v = _check("text", _p("Madrid"), "Let me think.\nThe capital of Spain is Madrid.\nDone.")
    assert v.detail["extracted"] == "The capital of Spain is Madrid."
    assert _check("text", _p("Madrid"), "Reasoning...\nAnswer: Rome ").detail["extracted"] == "Rome"


@pytest.mark.parametrize("reference,reply,ok", [
    ("New Delhi", "The capital of India is New Delhi.", True),
    ("New Delhi", "Delhi", False),
    ("Buenos Aires", "answer: buenos aires", True),
    ("Bogotá", "It is Bogota.", True),
    ("Bogota", "Bogotá", True),
    ("42", "Answer: 42.0", True),
    ("42", "The answer is 42", True),
    ("42", "42.5", False),
    ("42", "420", False),
    ("42", "the 42nd", False),
    ("1000", "1,000 apples", True),
])
def test_text_multi_word_accents_and_numbers(reference, reply, ok):
    assert (_check("text", _p(reference), reply).verdict == "correct") is ok


def test_text_without_a_reference_is_invalid():
    assert _check("text", _p(), "Madrid").verdict == "invalid"


# ------------------------------------------------------------------ math


@pytest.mark.parametrize("reference,reply,ok", [
    ("42", "6 * 7 = 42, so the answer is \\boxed{42}.", True),
    ("Natalia sold 24 clips in May.\n#### 72", "She sold 48 + 24 = 72 clips.\n#### 72", True),
    ("0.75", "The answer is 3/4", True),
    ("1/2", "So we get $\\frac{1}{2}$.", True),
    ("\\frac{1}{2}", "0.5", True),
    ("42", "The answer is \\boxed{41}", False),
])
def test_math(reference, reply, ok):
    v = _check("math", _p(reference), reply)
    assert (v.verdict, v.reward) == (("correct", 1.0) if ok else ("incorrect", 0.0)), v.detail
    assert v.detail["extracted"] is not None


def test_math_unparseable_reply_is_incorrect_with_nothing_extracted():
    v = _check("math", _p("42"), "I do not know.")
    assert (v.verdict, v.detail) == ("incorrect", {"extracted": None, "expected": "42"})


def test_math_runs_off_the_main_thread():
    # math-verify's default timeouts use signal.alarm, which raises off the main thread
    out = []
    t = threading.Thread(target=lambda: out.append(_check("math", _p("0.75"), "\\boxed{\\frac{3}{4}}")))
    t.start()
    t.join(60)
    assert [v.verdict for v in out] == ["correct"]


# ------------------------------------------------------------------ regex


def test_regex():
    pattern = r"\b(yes|true)\b"
    v = _check("regex", _p(pattern), "I think... Answer: yes, it is")
    assert (v.verdict, v.detail) == ("correct", {"extracted": "yes", "expected": pattern})
    # the pattern in meta wins over the reference; only the answer text is searched
    v = _check("regex", _p("ignored", pattern=r"\d{3}-\d{4}"), "call 555-1234\nAnswer: none")
    assert (v.verdict, v.detail["extracted"]) == ("incorrect", None)
    v = _check("regex", _p(r"colou?r"), "Colour")
    assert v.verdict == "incorrect"  # case matters; (?i) in the pattern asks otherwise


def test_regex_bad_pattern_is_invalid():
    v = _check("regex", _p("(unclosed"), "anything")
    assert v.verdict == "invalid" and v.detail["error"].startswith("the pattern does not compile: missing )")


# ------------------------------------------------------------------ code-tests


@pytest.fixture
def slow_cpu(monkeypatch):
    monkeypatch.setattr(verifiers, "CODE_TIMEOUT_S", 10.0)  # generous: the CPU is shared


ADD = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]


def test_code_tests_asserts(slow_cpu):
    v = _check("code-tests", _p(tests=ADD), "```python\ndef add(a, b):\n    return a + b\n```")
    assert (v.reward, v.verdict, v.detail["passed"], v.detail["total"]) == (1.0, "correct", 2, 2)
    assert v.detail["extracted"] == "def add(a, b):\n    return a + b\n" and v.detail["expected"] == ADD
    v = _check("code-tests", _p(tests=ADD), "def add(a, b):\n    return a - b\n")  # fails both
    assert (v.reward, v.verdict) == (0.0, "incorrect") and "AssertionError" in v.detail["error"]
    v = _check("code-tests", _p(tests=ADD[0]), "def add(a, b):\n    return 3\n")  # one string is one test
    assert (v.reward, v.verdict, v.detail["total"]) == (1.0, "correct", 1)


def test_code_tests_humaneval_style(slow_cpu):
    test = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
    prompt = _p(test=test, entry_point="square")
    v = _check("code-tests", prompt, "def square(x):\n    return x * x\n")
    assert (v.verdict, v.detail["total"]) == ("correct", 1)
    assert v.detail["expected"] == [test + "\ncheck(square)\n"]
    assert _check("code-tests", prompt, "def square(x):\n    return x + x\n").verdict == "incorrect"  # 2+2 == 4, 3+3 != 9


def test_code_tests_invalid_without_tests_or_parse():
    v = _check("code-tests", _p(), "def f(): pass\n")
    assert v.verdict == "invalid" and "--meta-field tests=FIELD" in v.detail["error"]
    v = _check("code-tests", _p(tests=ADD), "def add(a, b)\n    return a + b\n")
    assert (v.verdict, v.detail["parsed"]) == ("invalid", False) and "SyntaxError" in v.detail["error"]


# ------------------------------------------------------------------ routing in the verify stage


def test_verify_stage_routes_by_meta_verifier_then_world_then_reference():
    world = get_world("arithmetic")
    w = world.prompts(1)[0]
    text = Prompt(source="file", prompt="Capital of Spain?", reference="Madrid", meta={"verifier": "text"})
    ref = Prompt(source="file", prompt="2+2?", reference="4")
    plain = Prompt(source="file", prompt="say hi")
    assert [verifier_name(p) for p in (text, w, ref, plain)] == ["text", "world:arithmetic", "reference-match", None]
    prompts = [text, w, ref, plain]
    rollouts = pa.table({
        "prompt_id": [p.prompt_id for p in prompts],
        "completion": ["The capital of Spain is Madrid.", f"Answer: {w.meta['answer']}", "Answer: 4", "hi"],
        "reward": pa.nulls(4, pa.float32()), "verdict": pa.nulls(4, pa.string()),
        "verifier": pa.nulls(4, pa.string()), "verify_detail": pa.nulls(4, pa.string()),
    })
    out = verify(rollouts, {p.prompt_id: p for p in prompts}).to_pydict()
    assert out["verifier"] == ["text", "world:arithmetic", "reference-match", None]
    assert out["verdict"] == ["correct", "correct", "correct", "unverified"]
    assert json.loads(out["verify_detail"][0])["matched"] is True


def test_verify_stage_meta_verifier_wins_and_unknown_fails_first():
    w = get_world("arithmetic").prompts(1)[0]
    forced = Prompt(source=w.source, prompt=w.prompt, world=w.world, reference=w.reference, meta={"verifier": "text"})
    assert verifier_name(forced) == "text"
    bad = _p("x", verifier="nope")
    table = pa.table({"prompt_id": [bad.prompt_id], "completion": ["x"], "reward": pa.nulls(1, pa.float32()),
                      "verdict": pa.nulls(1, pa.string()), "verifier": pa.nulls(1, pa.string()),
                      "verify_detail": pa.nulls(1, pa.string())})
    with pytest.raises(TokenmillError, match="unknown verifier 'nope'"):
        verify(table, {bad.prompt_id: bad})
