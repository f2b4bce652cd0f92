"""Per-source options of `tokenmill run`: [SOURCE:]VALUE for fields, meta fields and verifiers."""

from __future__ import annotations

import json

import pytest

from test_cli import assert_fails, tokenmill
from tokenmill.cli import file_sources
from tokenmill.storage.lake import Lake


def test_a_prefix_maps_one_source_and_no_prefix_maps_all():
    qa, code = file_sources(["data/qa.jsonl", "mbpp.parquet"], 5, prompt_field=["q"], reference_field=["qa:a"],
                            meta_field=["mbpp:tests=test_list", "id"], verifier=["qa:text", "mbpp:code-tests"])
    assert (qa.path, qa.prompt_field, qa.reference_field, qa.verifier, qa.meta_fields, qa.limit) == \
        ("data/qa.jsonl", "q", "a", "text", ["id"], 5)
    assert (code.reference_field, code.verifier, code.meta_fields) == (None, "code-tests", ["tests=test_list", "id"])


def test_a_prefix_naming_no_source_is_part_of_the_value():
    (only,) = file_sources(["x.jsonl"], None, prompt_field=["question:text"], reference_field=[], meta_field=[], verifier=[])
    assert only.prompt_field == "question:text"


def test_an_unknown_verifier_is_one_line_naming_the_choices(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"prompt": "Capital of Spain?", "reference": "Madrid"}) + "\n")
    r = tokenmill("run", "--source", str(path), "--verifier", "qa:fuzzy", "--lake", str(tmp_path / "lake"))
    assert_fails(r, "unknown verifier", "text", "math")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sources_with_and_without_references_share_a_run(tmp_path):
    qa, code = tmp_path / "qa.jsonl", tmp_path / "tasks.jsonl"
    qa.write_text("".join(json.dumps({"q": f"What is {i} plus 1?\n", "a": str(i + 1)}) + "\n" for i in range(2)))
    code.write_text("".join(json.dumps({"q": f"Write a Python function f(x) that returns x plus {i}.\n",
                                        "checks": [f"assert f(1) == {1 + i}"]}) + "\n" for i in range(2)))
    lake = tmp_path / "lake"
    r = tokenmill("run", "--source", str(qa), "--source", str(code), "--prompt-field", "q", "--reference-field", "qa:a",
                  "--verifier", "qa:text", "--meta-field", "tasks:tests=checks", "--verifier", "tasks:code-tests",
                  "--run-id", "mix", "-n", "2", "--max-tokens", "24", "--lake", str(lake))
    assert r.returncode == 0, r.stderr
    rows = Lake(lake).read("rollouts", columns=["source", "verifier", "verdict", "verify_detail"]).to_pylist()
    assert {(x["source"], x["verifier"]) for x in rows} == {("qa", "text"), ("tasks", "code-tests")}
    assert all(x["verdict"] in ("correct", "incorrect", "invalid") for x in rows)  # every rollout checked
    assert all("extracted" in json.loads(x["verify_detail"]) for x in rows)
    prompts = Lake(lake).read("prompts", columns=["source", "reference", "meta"]).to_pylist()
    tasks = [json.loads(p["meta"]) for p in prompts if p["source"] == "tasks"]
    assert all(m["tests"] and m["verifier"] == "code-tests" for m in tasks)
    assert {p["reference"] for p in prompts if p["source"] == "tasks"} == {None}


def test_every_field_option_a_fix_names_exists():
    from tokenmill.sources.files import FIELD_OPTIONS

    r = tokenmill("run", "--help")
    assert r.returncode == 0
    for option in FIELD_OPTIONS.values():
        assert option in r.stdout, option


def test_a_split_field_gives_each_prompt_its_split(tmp_path):
    from tokenmill.sources import build_source

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "part": "train" if i % 2 else "test"}) + "\n" for i in range(4)))
    (cfg,) = file_sources([str(path)], None, prompt_field=[], reference_field=[], split_field=["qa:part"], meta_field=[],
                          verifier=[])
    assert [p.split for p in build_source(cfg).load()] == ["test", "train", "test", "train"]
