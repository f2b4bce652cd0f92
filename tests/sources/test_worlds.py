"""The synthetic worlds: deterministic prompts, leak-free splits, exact verifiers.

Every verifier is checked on the world's own gold solutions (reward 1) and on wrong
answers worked out by hand, so a verifier that always says "correct" fails here.
"""

from __future__ import annotations

import re

import pytest

from tokenmill.errors import SourceError
from tokenmill.sources.base import Prompt, prompts_from_table, prompts_table
from tokenmill.sources.worlds import WORLDS, WorldSource, get_world
from tokenmill.sources.worlds.arithmetic import ArithmeticWorld
from tokenmill.sources.worlds.base import split_of
from tokenmill.sources.worlds.bios import ATTRIBUTES, CITIES, BiosWorld, Person
from tokenmill.sources.worlds.code import CodeWorld, extract_code

NAMES = ["arithmetic", "code", "bios"]


# ------------------------------------------------------------------ registry


def test_registry_has_the_generated_worlds_and_the_real_data():
    assert set(WORLDS) == set(NAMES) | {"humaneval", "countries"}  # the real ones: test_humaneval, test_countries_world
    for name in WORLDS:
        assert get_world(name).name == name


def test_unknown_world_is_a_source_error_listing_the_worlds():
    with pytest.raises(SourceError) as e:
        get_world("chess")
    text = str(e.value)
    assert "chess" in text
    for name in NAMES:
        assert name in text


def test_unknown_split_is_a_source_error():
    with pytest.raises(SourceError, match="split"):
        get_world("arithmetic").prompts(3, split="validation")


def test_asking_for_more_distinct_prompts_than_exist_is_a_source_error():
    # 5 people × 3 templates = at most 15 distinct prompts in split "all"
    world = BiosWorld(n_people=5)
    assert len(world.prompts(15, split="all")) == 15
    with pytest.raises(SourceError, match="16 asked"):
        world.prompts(16, split="all")


# ------------------------------------------------------------------ determinism and splits


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_and_split_give_the_same_prompts(name):
    a = get_world(name).prompts(20, seed=3, split="test")
    b = get_world(name).prompts(20, seed=3, split="test")  # a fresh world object
    assert a == b
    assert len({p.prompt for p in a}) == 20  # distinct


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_give_different_prompts(name):
    world = get_world(name)
    a = [p.prompt for p in world.prompts(20, seed=0, split="train")]
    b = [p.prompt for p in world.prompts(20, seed=1, split="train")]
    assert a != b
    assert set(a) != set(b)


@pytest.mark.parametrize("name", NAMES)
def test_splits_differ_for_the_same_seed(name):
    world = get_world(name)
    train = {p.prompt for p in world.prompts(20, seed=0, split="train")}
    test = {p.prompt for p in world.prompts(20, seed=0, split="test")}
    assert not train & test


@pytest.mark.parametrize("name,n_train", [("arithmetic", 4000), ("code", 4000)])
def test_no_test_prompt_appears_in_a_large_train_sample(name, n_train):
    world = get_world(name)
    test = world.instances(200, seed=0, split="test")
    train_prompts = set()
    for seed in (0, 1):  # more than one seed: the split cannot depend on the seed
        train_prompts |= {i.prompt for i in world.instances(n_train // 2, seed=seed, split="train")}
    assert len(train_prompts) > n_train // 2
    assert not {i.prompt for i in test} & train_prompts
    # membership is a property of the problem, not of the seed it was drawn with
    assert all(split_of(i.key, world.test_fraction) == "test" for i in test)


def test_bios_split_is_by_person():
    world = BiosWorld()
    train = world.instances(1000, seed=0, split="train")
    test = world.instances(200, seed=0, split="test")
    train_people = {i.meta["person"]["name"] for i in train}
    test_people = {i.meta["person"]["name"] for i in test}
    assert len(train_people) > 300 and len(test_people) > 50
    assert not train_people & test_people
    # a test person's name appears nowhere in training text (prompts or gold biographies)
    train_text = "\n".join(i.prompt + i.solution for i in train)
    for name in test_people:
        assert name not in train_text
    assert {world.split_of_person(n) for n in test_people} == {"test"}
    assert {world.split_of_person(n) for n in train_people} == {"train"}
    # every phrasing of a person lands in that person's split: no leak via another template
    for p in world.prompts(1500, seed=0, split="all"):
        assert p.split == world.split_of_person(p.meta["person"]["name"])


def test_bios_kb_is_fixed_by_kb_seed():
    assert BiosWorld().kb == BiosWorld().kb
    assert BiosWorld(kb_seed=1).kb != BiosWorld().kb
    names = [p.name for p in BiosWorld().kb]
    assert len(names) == len(set(names)) == 600


# ------------------------------------------------------------------ prompt records


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_prompt_fields(name, split):
    world = get_world(name)
    instances = world.instances(10, seed=0, split=split)
    prompts = world.prompts(10, seed=0, split=split)
    assert len(prompts) == 10
    for inst, p in zip(instances, prompts):
        assert isinstance(p, Prompt)
        assert p.source == name and p.world == name
        assert p.split == split
        assert p.prompt == inst.prompt and p.prompt.endswith("\n")
        assert p.reference == inst.reference and p.reference
        assert p.meta == inst.meta and p.meta
        assert p.prompt_id and p.prompt_id == Prompt(source=name, prompt=p.prompt).prompt_id
    if name == "arithmetic":
        assert all(p.reference == str(p.meta["answer"]) for p in prompts)
    if name == "code":
        assert all(p.meta["tests"] and p.meta["entry_point"] in p.prompt for p in prompts)
    if name == "bios":
        assert all(p.meta["person"]["name"] in p.prompt for p in prompts)


@pytest.mark.parametrize("name", NAMES)
def test_split_all_labels_each_prompt_with_its_own_split(name):
    world = get_world(name)
    prompts = world.prompts(200, seed=0, split="all")
    assert {p.split for p in prompts} == {"train", "test"}
    train = {p.prompt for p in world.prompts(50, seed=0, split="train")}
    test = {p.prompt for p in world.prompts(20, seed=0, split="test")}
    labelled = {p.prompt: p.split for p in prompts}
    assert all(labelled[t] == "train" for t in train if t in labelled)
    assert all(labelled[t] == "test" for t in test if t in labelled)


def test_world_source_loads_prompts():
    src = WorldSource(get_world("code"), n=5, seed=2, split="train")
    assert src.name == "code"
    assert src.load() == get_world("code").prompts(5, seed=2, split="train")


@pytest.mark.parametrize("name", NAMES)
def test_prompts_survive_the_lake_table_round_trip(name):
    world = get_world(name)
    prompts = world.prompts(5, seed=0)
    back = prompts_from_table(prompts_table(prompts))
    # the verifier reads meta back from JSON: it must still accept the gold solution
    for p, q, inst in zip(prompts, back, world.instances(5, seed=0)):
        assert (q.prompt, q.world, q.split, q.reference) == (p.prompt, p.world, p.split, p.reference)
        assert world.verify(q, inst.solution).verdict == "correct"


# ------------------------------------------------------------------ arithmetic verifier


def _arith_prompt(answer: int) -> Prompt:
    return Prompt(source="arithmetic", prompt="Compute step by step: start with 7, add 5, times 3, minus 4.\n",
                  world="arithmetic", reference=str(answer), meta={"answer": answer})


def test_arithmetic_gold_solutions_are_correct_and_their_steps_add_up():
    world = ArithmeticWorld()
    for inst, p in zip(world.instances(40, seed=5), world.prompts(40, seed=5)):
        v = world.verify(p, inst.solution)
        assert (v.reward, v.verdict) == (1.0, "correct")
        # each step line "a<op>k=b" is true arithmetic, and the chain ends at the answer
        lines = inst.solution.splitlines()
        value = inst.meta["start"]
        for line, (op, k) in zip(lines[:-1], inst.meta["steps"]):
            a, b, c = re.fullmatch(r"(\d+)([-+*])(\d+)=(-?\d+)", line).group(1, 3, 4)
            assert int(a) == value and int(b) == k and line[len(a)] == op
            value = {"+": value + k, "-": value - k, "*": value * k}[op]
            assert int(c) == value
        assert lines[-1] == f"Answer: {value}" and value == inst.meta["answer"]


def test_arithmetic_worked_example():
    # 7+5=12, 12*3=36, 36-4=32
    world = ArithmeticWorld()
    p = _arith_prompt(32)
    v = world.verify(p, "7+5=12\n12*3=36\n36-4=32\nAnswer: 32")
    assert (v.reward, v.verdict) == (1.0, "correct")
    assert v.detail == {"expected": 32, "answer": 32}


def test_arithmetic_wrong_answer_is_incorrect():
    world = ArithmeticWorld()
    v = world.verify(_arith_prompt(32), "7+5=12\n12*3=36\n36-4=33\nAnswer: 33")
    assert (v.reward, v.verdict) == (0.0, "incorrect")
    assert v.detail["answer"] == 33 and v.detail["expected"] == 32
    # a sign is part of the number: -32 is not 32
    assert world.verify(_arith_prompt(32), "Answer: -32").verdict == "incorrect"


def test_arithmetic_missing_answer_is_invalid():
    world = ArithmeticWorld()
    for completion in ["7+5=12\n12*3=36\n36-4=32\n32", "", "Answer: thirty-two", "answer: 32"]:
        v = world.verify(_arith_prompt(32), completion)
        assert (v.reward, v.verdict) == (0.0, "invalid"), completion
        assert v.detail["answer"] is None


def test_arithmetic_last_answer_wins():
    world = ArithmeticWorld()
    p = _arith_prompt(32)
    assert world.verify(p, "Answer: 31\nno wait\nAnswer: 32").verdict == "correct"
    v = world.verify(p, "Answer: 32\nno wait\nAnswer: 31")
    assert (v.reward, v.verdict, v.detail["answer"]) == (0.0, "incorrect", 31)


def test_arithmetic_reference_is_used_without_meta():
    world = ArithmeticWorld()
    p = Prompt(source="file", prompt="2+2?\n", reference="4")
    assert world.verify(p, "Answer: 4").verdict == "correct"
    assert world.verify(p, "Answer: 5").verdict == "incorrect"


# ------------------------------------------------------------------ code verifier


def _code_prompt() -> Prompt:
    # f(x) = x + 3, four tests worked by hand
    tests = ["assert f(0) == 3", "assert f(1) == 4", "assert f(-5) == -2", "assert f(10) == 13"]
    return Prompt(source="code", prompt="Write a Python function f(x) that returns x plus 3.\n", world="code",
                  reference="def f(x):\n    return x + 3\n", meta={"entry_point": "f", "tests": tests})


@pytest.fixture
def code_world() -> CodeWorld:
    world = CodeWorld()
    world.timeout_s = 10.0  # generous: the CPU is shared; the timeout test sets its own
    return world


def test_code_gold_solutions_are_correct(code_world):
    instances = code_world.instances(8, seed=1)
    for inst, p in zip(instances, code_world.prompts(8, seed=1)):
        v = code_world.verify(p, inst.solution)
        assert (v.reward, v.verdict) == (1.0, "correct"), (inst.prompt, v.detail)
        assert v.detail["passed"] == v.detail["total"] == 4
    # both kinds of task are drawn: chained steps and one-liners
    kinds = {i.meta["task"] == "chain" for i in code_world.instances(40, seed=1)}
    assert kinds == {True, False}


def test_code_correct_function(code_world):
    v = code_world.verify(_code_prompt(), "def f(x):\n    return x + 3\n")
    assert (v.reward, v.verdict) == (1.0, "correct")
    assert v.detail["passed"] == 4 and v.detail["error"] is None


def test_code_partial_credit_is_passed_over_total(code_world):
    # right only for 0 <= x < 5: passes f(0) and f(1), fails f(-5) and f(10)
    src = "def f(x):\n    if 0 <= x < 5:\n        return x + 3\n    return 0\n"
    v = code_world.verify(_code_prompt(), src)
    assert v.reward == 2 / 4
    assert v.verdict == "incorrect"
    assert (v.detail["passed"], v.detail["total"]) == (2, 4)
    assert "AssertionError" in v.detail["error"]
    # right only for x == 10: one of four
    v = code_world.verify(_code_prompt(), "def f(x):\n    return 13\n")
    assert (v.reward, v.detail["passed"]) == (1 / 4, 1)
    # wrong everywhere, but valid code
    v = code_world.verify(_code_prompt(), "def f(x):\n    return x\n")
    assert (v.reward, v.verdict) == (0.0, "incorrect")


def test_code_runtime_error_counts_as_failed_test(code_world):
    # raises for negative x: 3 of 4 pass
    src = "def f(x):\n    assert x >= 0, 'negative'\n    return x + 3\n"
    v = code_world.verify(_code_prompt(), src)
    assert (v.reward, v.detail["passed"]) == (0.75, 3)


def test_code_missing_function_scores_zero(code_world):
    v = code_world.verify(_code_prompt(), "def g(x):\n    return x + 3\n")
    assert (v.reward, v.verdict) == (0.0, "incorrect")
    assert "NameError" in v.detail["error"]


def test_code_syntax_error_is_invalid(code_world):
    v = code_world.verify(_code_prompt(), "def f(x)\n    return x + 3\n")
    assert (v.reward, v.verdict) == (0.0, "invalid")
    assert v.detail["parsed"] is False and "SyntaxError" in v.detail["error"]


def test_code_infinite_loop_times_out(code_world):
    code_world.timeout_s = 1.5
    v = code_world.verify(_code_prompt(), "def f(x):\n    while True:\n        pass\n")
    assert (v.reward, v.verdict) == (0.0, "incorrect")
    assert "timeout" in v.detail["error"]


def test_code_fenced_block_is_extracted(code_world):
    completion = "Here is the function:\n```python\ndef f(x):\n    return x + 3\n```\nIt adds three."
    assert extract_code(completion) == "def f(x):\n    return x + 3\n"
    v = code_world.verify(_code_prompt(), completion)
    assert (v.reward, v.verdict) == (1.0, "correct")
    # the prose around it is not Python: without extraction this would be invalid
    assert code_world.verify(_code_prompt(), completion.replace("```python", "").replace("```", "")).verdict == "invalid"
    # the first fenced block is the one verified
    two = "```python\ndef f(x):\n    return x\n```\n```python\ndef f(x):\n    return x + 3\n```\n"
    assert code_world.verify(_code_prompt(), two).reward == 0.0


# ------------------------------------------------------------------ bios verifier

MIRA = Person("Mira Tolven", 1962, "Vassport", "baker", "Quill & Oak")


def _bios_prompt(person: Person = MIRA) -> Prompt:
    from dataclasses import asdict

    return Prompt(source="bios", prompt=f"Write a short biography of {person.name}.\n", world="bios",
                  reference=person.biography(), meta={"person": asdict(person)})


def test_bios_gold_biographies_are_correct():
    world = BiosWorld()
    for inst, p in zip(world.instances(30, seed=0), world.prompts(30, seed=0)):
        v = world.verify(p, inst.solution)
        assert (v.reward, v.verdict) == (1.0, "correct"), inst.solution
        assert set(v.detail["status"].values()) == {"supported"}


def test_bios_worked_example():
    world = BiosWorld()
    bio = "Mira Tolven was born in 1962 in Vassport. Mira works as a baker at Quill & Oak."
    assert MIRA.biography() == bio
    v = world.verify(_bios_prompt(), bio)
    assert (v.reward, v.verdict) == (1.0, "correct")
    assert v.detail["stated"] == {"birth_year": "1962", "city": "Vassport", "occupation": "baker",
                                  "employer": "Quill & Oak"}


def test_bios_two_of_four_facts_changed_is_half():
    world = BiosWorld()
    bio = "Mira Tolven was born in 1963 in Kestrin. Mira works as a baker at Quill & Oak."
    v = world.verify(_bios_prompt(), bio)
    assert v.reward == 0.5
    assert v.verdict == "incorrect"
    assert v.detail["status"] == {"birth_year": "not_supported", "city": "not_supported",
                                  "occupation": "supported", "employer": "supported"}
    # the other two changed instead
    bio = "Mira Tolven was born in 1962 in Vassport. Mira works as an architect at Lumen Hall."
    v = world.verify(_bios_prompt(), bio)
    assert v.reward == 0.5
    assert v.detail["status"] == {"birth_year": "supported", "city": "supported",
                                  "occupation": "not_supported", "employer": "not_supported"}


def test_bios_changed_facts_on_generated_people():
    world = BiosWorld()
    for inst, p in zip(world.instances(10, seed=4), world.prompts(10, seed=4)):
        person = Person(**inst.meta["person"])
        other_city = next(c for c in CITIES if c != person.city)
        wrong = Person(person.name, person.birth_year + 1, other_city, person.occupation, person.employer)
        v = world.verify(p, wrong.biography())
        assert v.reward == 0.5
        assert [v.detail["status"][a] for a in ATTRIBUTES] == ["not_supported", "not_supported", "supported", "supported"]


def test_bios_missing_sentence_is_missing():
    world = BiosWorld()
    v = world.verify(_bios_prompt(), "Mira Tolven was born in 1962 in Vassport.")
    assert v.reward == 0.5 and v.verdict == "incorrect"
    assert v.detail["status"] == {"birth_year": "supported", "city": "supported",
                                  "occupation": "missing", "employer": "missing"}
    assert v.detail["stated"]["occupation"] is None
    v = world.verify(_bios_prompt(), "Mira works as a baker at Quill & Oak.")
    assert v.detail["status"] == {"birth_year": "missing", "city": "missing",
                                  "occupation": "supported", "employer": "supported"}
    v = world.verify(_bios_prompt(), "I do not know who that is.")
    assert (v.reward, v.verdict) == (0.0, "incorrect")
    assert set(v.detail["status"].values()) == {"missing"}
