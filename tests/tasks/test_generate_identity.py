"""What a rollout's id records: engine, prompt rendering, model name — different work never
collides with stored work, and work as it was before keeps its id."""

import shutil

import pytest
from typer.testing import CliRunner

from tokenmill import ids
from tokenmill.config import SourceConfig
from tokenmill.engines import SamplingParams
from tokenmill.models.chat import PromptFormat
from tokenmill.models.registry import resolve_model
from tokenmill.storage.lake import Lake
from tokenmill.tasks import generate, prompts, verify


def _run(lake, run_id, engine="hf", model="tiny-small", fmt=None, params=None, n_prompts=3):
    params = params or SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3)
    added = 0
    for shard in prompts.load_and_shard(lake, run_id, [SourceConfig(world="arithmetic", n=n_prompts, seed=1)], 64):
        out = generate.generate_shard(lake, run_id, shard, engine, model, params, fmt=fmt)
        added += verify.verify_and_commit(lake, run_id, shard, out)["added"]
    return added


def test_raw_hf_rollouts_keep_the_ids_they_always_had(tmp_path):
    lake = Lake(tmp_path / "lake")
    _run(lake, "r")
    rows = lake.read("rollouts", "r").to_pylist()
    sampling = {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 12, "logprobs": 5}
    for r in rows:  # the formula before engines and renderings joined the id
        assert r["rollout_id"] == ids._digest("rollout", r["prompt_id"], "tiny-small", ids.canonical_json(sampling), "3",
                                              str(r["sample_index"]))
        assert r["prompt_format"] is None


def test_a_system_prompt_makes_other_rollouts_than_the_raw_prompt(tmp_path):
    lake = Lake(tmp_path / "lake")
    first = _run(lake, "r")
    second = _run(lake, "r", fmt=PromptFormat(system_prompt="Be exact."))
    rows = lake.read("rollouts", "r").to_pylist()
    assert first == second == 6 and len(rows) == 12  # nothing dropped as a duplicate
    assert {r["prompt_format"] for r in rows} == {None, '{"chat_template":"none","system_prompt":"Be exact."}'}


def test_the_chat_template_choice_is_part_of_the_identity(tmp_path, smollm2_dir):
    lake = Lake(tmp_path / "lake")
    params = SamplingParams(n=1, temperature=0.0, max_tokens=3)
    _run(lake, "r", model="smollm2-135m", params=params, n_prompts=2)
    _run(lake, "r", model="smollm2-135m", params=params, n_prompts=2, fmt=PromptFormat(chat_template="none"))
    rows = lake.read("rollouts", "r").to_pylist()
    templated = [r for r in rows if r["prompt_format"]]
    assert len(rows) == 4 and len(templated) == 2
    assert all(r["prompt_token_ids"][0] == 1 for r in templated)  # <|im_start|>
    assert all(r["prompt_token_ids"][0] != 1 for r in rows if not r["prompt_format"])


@pytest.mark.vllm
def test_a_second_engine_adds_its_samples_instead_of_losing_them(tmp_path):
    """Failed before: rollout_id left out the engine, so vLLM's samples (T = 1, same seed)
    were dropped as duplicates of hf's while the summary counted them as new."""
    pytest.importorskip("vllm")
    lake = Lake(tmp_path / "lake")
    assert _run(lake, "r", engine="hf") == 6
    assert _run(lake, "r", engine="vllm") == 6
    rows = lake.read("rollouts", "r").to_pylist()
    assert len(rows) == 12 and {r["engine"] for r in rows} == {"hf", "vllm"}
    assert lake.read("tokens", "r").num_rows == sum(r["num_tokens"] for r in rows)
    assert _run(lake, "r", engine="vllm") == 0  # the same work again: idempotent


def test_run_generates_with_a_model_trained_into_the_lake(tmp_path, prefect_harness):
    """Failed before: `label` accepted `_artifacts/models/<id>` but `run` refused it."""
    from tokenmill.cli import app
    from tokenmill.storage.artifacts import store_artifact

    lake = Lake(tmp_path / "lake")
    rel = "_artifacts/models/copy0001"
    store_artifact(lake, "train", rel, lambda tmp: shutil.copytree(resolve_model("tiny-small").path, tmp, dirs_exist_ok=True),
                   artifact_id="copy0001", role="sft", base_model="tiny-small", train_rollouts=0, train_tokens=0, steps=0,
                   final_loss=None, lineage={})
    res = CliRunner().invoke(app, ["run", "--lake", lake.uri, "--run-id", "g", "--world", "arithmetic", "--prompts", "2",
                                   "-n", "1", "--max-tokens", "8", "--model", rel])
    assert res.exit_code == 0, res.output
    rows = lake.read("rollouts", "g").to_pylist()
    assert len(rows) == 2 and {r["model"] for r in rows} == {rel}  # named by its lake path, wherever it loads from
    res = CliRunner().invoke(app, ["run", "--lake", lake.uri, "--world", "arithmetic", "--model", "_artifacts/models/nope"])
    assert "no finished model artifact" in str(res.exception)  # a TokenmillError: one line, exit 2 from main()
