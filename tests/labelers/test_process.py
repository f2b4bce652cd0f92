"""Process truth: the arithmetic world's step checker on hand-worked completions, the
character → token rule, and the label family on a real run."""

import numpy as np
import pytest

from tokenmill.config import LabelConfig
from tokenmill.labelers.process.labeler import ProcessLabeler, token_flags
from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds import get_world
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake

# start with 44, times 2 (88), add 48 (136)
PROMPT = Prompt(source="arithmetic", prompt="Compute step by step: start with 44, times 2, add 48.\n", reference="136",
                meta={"start": 44, "steps": [["*", 2], ["+", 48]], "answer": 136}, world="arithmetic")


@pytest.mark.parametrize("completion, expected", [
    ("44*2=88\n88+48=136\nAnswer: 136", (-1, -1)),          # right throughout
    ("44*2=84\n84+48=136\nAnswer: 136", (5, 0)),            # a lucky answer: the error is the 84
    ("44*2=88\n88+48=137\nAnswer: 137", (14, 1)),           # the second result
    ("44*3=132\n132+48=180\nAnswer: 180", (3, 0)),          # the operand
    ("44+2=46\nAnswer: 46", (2, 0)),                        # the operator
    ("44 x 2 = 88\n88 + 48 = 136\nAnswer: 136", (-1, -1)),  # spaces and x for times
    ("44*2=88\n88+48=136\nAnswer: 130", (26, 2)),           # every step right, the answer wrong
    ("44*2=88\nAnswer: 88", (8, 1)),                        # a step missing: the early answer
    ("44*2=88\n88+4", (-1, -1)),                            # truncated before any error
])
def test_the_step_checker_finds_the_first_wrong_field(completion, expected):
    got = get_world("arithmetic").first_error(PROMPT, completion)
    assert got == expected
    if got[0] >= 0:
        assert completion[got[0]] not in " \n"  # it points at the wrong field's first character


def test_token_flags_mark_the_token_holding_the_error_and_the_tokens_before_it():
    # rollout 0: tokens "44" "*" "2=" "84" → chars [0,2) [2,3) [3,5) [5,7), error at 5; rollout 1: no error
    starts, ends = np.array([0, 2, 3, 5, 0, 1]), np.array([2, 3, 5, 7, 1, 2])
    first, before = token_flags(starts, ends, np.array([4, 2]), np.array([5, -1]))
    assert first.tolist() == [False, False, False, True, False, False]
    assert before.tolist() == [True, True, True, False, True, True]


def test_process_labels_on_a_run_mark_one_first_error_per_wrong_rollout(copy_lake):
    lake = Lake(copy_lake)
    labeler = ProcessLabeler()
    for shard in lake.files("rollouts", "r1"):
        labeler.label_shard(lake, "r1", shard)
    con = connect(lake)
    rows = con.execute("""SELECT r.verdict, sum(p.first_error::INT) AS errors, bool_and(p.before_error) AS clean,
                                 any_value(p.step) AS step, count(*) = any_value(r.num_tokens) AS every_token
                          FROM process_labels p JOIN rollouts r USING (run_id, rollout_id) GROUP BY r.rollout_id, r.verdict""").fetchall()
    assert rows and all(r[4] for r in rows)
    assert all(r[1] <= 1 and (r[1] == 0) == r[2] for r in rows)  # at most one first error; none ⇔ all clean
    assert all(r[1] == 1 for r in rows if r[0] == "incorrect" and r[3] >= 0)
    assert not [r for r in rows if r[0] == "correct" and r[1] == 1 and r[3] < 0]
    # an incorrect rollout with an Answer: line always has an error somewhere
    wrong = con.execute("""SELECT count(*) FROM rollouts r WHERE verdict = 'incorrect' AND NOT EXISTS (
                               SELECT 1 FROM process_labels p WHERE p.rollout_id = r.rollout_id AND p.first_error)""").fetchone()[0]
    assert wrong == 0
    assert LabelConfig(run_id="r1", labelers=["process"]).labelers == ["process"]  # registered as a family
    before = lake.read("process_labels", "r1").num_rows
    for shard in lake.files("rollouts", "r1"):
        labeler.label_shard(lake, "r1", shard)
    assert lake.read("process_labels", "r1").num_rows == before
