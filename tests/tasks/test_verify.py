import json

import pyarrow as pa

from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds import get_world
from tokenmill.tasks.verify import reference_match, verify


def test_reference_match_reads_the_last_answer_line():
    assert reference_match("42", "6*7=42\nAnswer: 42").verdict == "correct"
    assert reference_match("42", "Answer: 41\nAnswer:  42 ").reward == 1.0
    assert reference_match("Paris", "The capital is\nparis").verdict == "correct"  # last line, case-folded
    assert reference_match("42", "Answer: 24").verdict == "incorrect"


def test_verify_fills_each_rollout_from_its_prompt():
    world = get_world("arithmetic")
    p = world.prompts(1)[0]
    plain = Prompt(source="file", prompt="say hi")
    with_ref = Prompt(source="file", prompt="2+2?", reference="4")
    rollouts = pa.table({
        "prompt_id": [p.prompt_id, p.prompt_id, plain.prompt_id, with_ref.prompt_id],
        "completion": [f"Answer: {p.meta['answer']}", "Answer: -1", "hi", "Answer: 4"],
        "reward": pa.nulls(4, pa.float32()), "verdict": pa.nulls(4, pa.string()),
        "verifier": pa.nulls(4, pa.string()), "verify_detail": pa.nulls(4, pa.string()),
    })
    out = verify(rollouts, {q.prompt_id: q for q in (p, plain, with_ref)}).to_pydict()
    assert out["verdict"] == ["correct", "incorrect", "unverified", "correct"]
    assert out["reward"] == [1.0, 0.0, None, 1.0]
    assert out["verifier"] == ["world:arithmetic", "world:arithmetic", None, "reference-match"]
    assert json.loads(out["verify_detail"][1]) == {"answer": -1, "expected": p.meta["answer"]}
