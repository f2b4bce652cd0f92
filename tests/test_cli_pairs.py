"""One KEY=VALUE parser for --engine-option, --param and --model ROLE=MODEL."""

from __future__ import annotations

import pytest

from tokenmill.cli import parse_options, parse_pairs, parse_roles
from tokenmill.errors import TokenmillError


def test_values_are_json_where_they_are_json_and_text_elsewhere():
    got = parse_pairs(["max_pairs=2", "lr=5e-5", "lora=true", "ids=[1, 2]", "x=null", "y=None",
                       "weight=coalesce(p_ce, 1.0)", "where=verdict = 'correct'", "dtype=bfloat16"], "--param", "k=v")
    assert got == {"max_pairs": 2, "lr": 5e-5, "lora": True, "ids": [1, 2], "x": None, "y": None,
                   "weight": "coalesce(p_ce, 1.0)", "where": "verdict = 'correct'", "dtype": "bfloat16"}
    assert parse_options(["max_model_len=4096"]) == {"max_model_len": 4096}  # the same rule for every option
    assert parse_pairs(["config=1234e567", "max_pairs=3"], "--param", "k=v", text_keys=("config",)) == \
        {"config": "1234e567", "max_pairs": 3}


def test_roles_stay_text_and_bad_pairs_name_the_option():
    assert parse_roles(["ref=1", " large = tiny-large "]) == {"ref": "1", "large": "tiny-large"}
    with pytest.raises(TokenmillError, match=r"--model 'ref' is not ROLE=MODEL"):
        parse_roles(["ref"])
    with pytest.raises(TokenmillError, match=r"--param '=2' is not KEY=VALUE") as e:
        parse_pairs(["=2"], "--param", "max_pairs=2")
    assert "--param max_pairs=2" in e.value.fix
