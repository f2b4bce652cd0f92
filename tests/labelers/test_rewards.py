"""The rewards labeler on a real run: one row per token and kind, the formulas applied to
the lake's own numbers, idempotent re-labelling."""

import math

import numpy as np
import pyarrow.compute as pc
import pytest

from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake
from tokenmill.labelers.rewards.labeler import RewardsConfig, RewardsLabeler


@pytest.fixture
def labelled(copy_lake):
    lake = Lake(copy_lake)
    labeler = RewardsLabeler(RewardsConfig(beta=0.5), models={"ref": "tiny-large"})
    counts = [labeler.label_shard(lake, "r1", s) for s in lake.files("rollouts", "r1")]
    return lake, labeler, counts


def test_every_token_gets_one_row_per_kind(labelled):
    lake, _, _ = labelled
    con = connect(lake)
    tokens = con.execute("SELECT count(*) FROM tokens").fetchone()[0]
    per_kind = dict(con.execute("SELECT kind, count(*) FROM token_rewards GROUP BY 1").fetchall())
    assert per_kind == {k: tokens for k in ("dpo", "grpo", "tempo", "d3s", "entropy", "rlpr", "rlpr_raw")}
    assert con.execute("SELECT count(*) FROM (SELECT DISTINCT rollout_id, pos, kind FROM token_rewards)").fetchone()[0] \
        == 7 * tokens


def test_grpo_is_the_group_normalised_reward(labelled):
    lake, _, _ = labelled
    con = connect(lake)
    diff = con.execute("""
        WITH g AS (SELECT rollout_id, reward, avg(reward) OVER w AS mu, coalesce(stddev_samp(reward) OVER w, 0) AS sd
                   FROM rollouts WINDOW w AS (PARTITION BY prompt_id, model, sampling))
        SELECT max(abs(t.value - (g.reward - g.mu) / (g.sd + 1e-6)))
        FROM token_rewards t JOIN g USING (rollout_id) WHERE t.kind = 'grpo'""").fetchone()[0]
    assert diff < 1e-3


def test_dpo_is_beta_times_the_logprob_gap(labelled):
    con = connect(labelled[0])
    diff = con.execute("""
        SELECT max(abs(t.value - 0.5 * (p.logprob - r.logprob)))
        FROM token_rewards t JOIN scores p USING (rollout_id, pos) JOIN scores r USING (rollout_id, pos)
        WHERE t.kind = 'dpo' AND p.model = 'policy' AND r.model = 'ref'""").fetchone()[0]
    assert diff < 1e-5
    models = con.execute("SELECT DISTINCT models, params FROM token_rewards WHERE kind = 'dpo'").fetchall()
    assert models == [('{"dpo":"policy","ref":"tiny-large"}',
                       '{"beta":0.5,"clip":null,"dpo_role":"policy","ref_role":"ref"}')]


def test_tempo_equals_grpo_away_from_branches_and_d3s_keeps_a_fifth(labelled):
    con = connect(labelled[0])
    # at the first token every rollout's prefix tree node is the group root: 𝒜 = the group
    same, differ = con.execute("""
        SELECT count(*) FILTER (WHERE abs(a.value - b.value) < 1e-5), count(*) FILTER (WHERE abs(a.value - b.value) >= 1e-5)
        FROM token_rewards a JOIN token_rewards b USING (rollout_id, pos)
        WHERE a.kind = 'tempo' AND b.kind = 'grpo'""").fetchone()
    assert same > 0 and differ > 0  # sampled rollouts branch somewhere
    kept, total = con.execute("SELECT count(*) FILTER (WHERE flag), count(*) FROM token_rewards WHERE kind = 'd3s'").fetchone()
    assert kept == math.ceil(0.2 * total)


def test_rlpr_is_the_mean_probability_of_the_reference_tokens(labelled):
    lake, labeler, _ = labelled
    con = connect(lake)
    rid, completion, ref, prompt_ids, value = con.execute("""
        SELECT r.rollout_id, r.completion, p.reference, r.prompt_token_ids, t.value
        FROM rollouts r JOIN prompts p USING (prompt_id) JOIN token_rewards t USING (rollout_id)
        WHERE t.kind = 'rlpr_raw' AND t.pos = 0 AND r.completion LIKE '%Answer:%' ORDER BY r.rollout_id LIMIT 1""").fetchone()
    from tokenmill.tasks.generate import cached_engine

    engine = cached_engine("hf", "tiny-small")
    reasoning = completion[: completion.rindex("Answer:") + len("Answer:")] + " "
    z = engine.tokenizer(reasoning, add_special_tokens=False)["input_ids"]
    full = engine.tokenizer(reasoning + ref, add_special_tokens=False)["input_ids"]
    assert full[: len(z)] == z  # digits are split: the reference starts a fresh token here
    lp = engine.score([prompt_ids], [full], top_k=1)[0].logprobs[len(z):]
    assert value == pytest.approx(float(np.exp(lp).mean()), abs=1e-5)
    assert 0 < value <= 1
    # the RLPR reward is debiased: minus the probability with no reasoning (y* right after the
    # prompt), floored at 0 (OpenBMB/RLPR's scoreB − scoreA with `threshold_0`)
    p0 = float(np.exp(engine.score([prompt_ids], [engine.tokenizer(ref, add_special_tokens=False)["input_ids"]],
                                   top_k=1)[0].logprobs).mean())
    (debiased,) = con.execute("SELECT value FROM token_rewards WHERE kind = 'rlpr' AND pos = 0 AND rollout_id = ?",
                              [rid]).fetchone()
    assert debiased == pytest.approx(max(value - p0, 0.0), abs=1e-5)


def test_relabelling_adds_nothing_and_recomputes_nothing(labelled):
    lake, labeler, counts = labelled
    rows = lake.read("token_rewards", "r1").num_rows
    assert sum(sum(c.values()) for c in counts) == rows
    again = [labeler.label_shard(lake, "r1", s) for s in lake.files("rollouts", "r1")]
    assert again == [{}] * len(again)  # every (kind, shard) is marked done
    assert lake.read("token_rewards", "r1").num_rows == rows


def test_new_parameters_add_rows_for_the_kinds_they_change(labelled):
    lake, _, _ = labelled
    before = lake.read("token_rewards", "r1")
    other = RewardsLabeler(RewardsConfig(beta=1.0, clip=0.2), models={"ref": "tiny-large"})
    counts = other.label_shard(lake, "r1", lake.files("rollouts", "r1")[0])
    assert set(counts) == {"dpo"}  # only the dpo config changed
    after = lake.read("token_rewards", "r1")
    new = after.filter(pc.field("params") == '{"beta":1.0,"clip":0.2,"dpo_role":"policy","ref_role":"ref"}')
    assert after.num_rows == before.num_rows + new.num_rows
    assert pc.max(pc.abs(new.column("value"))).as_py() <= 0.2 + 1e-6


def test_unknown_kind_is_a_clear_error():
    from tokenmill.errors import TokenmillError

    with pytest.raises(TokenmillError, match="unknown reward kind 'ppo'"):
        RewardsLabeler(RewardsConfig(kinds=["ppo"]))


def test_a_role_filled_by_another_model_is_scored_anew_and_read_by_its_model(labelled):
    lake, first, _ = labelled  # ref = tiny-large
    again = RewardsLabeler(RewardsConfig(kinds=["dpo"], beta=0.5), models={"ref": "tiny-small"})
    for shard in lake.files("rollouts", "r1"):
        again.label_shard(lake, "r1", shard)
    con = connect(lake)
    tokens = con.execute("SELECT count(*) FROM tokens").fetchone()[0]
    assert dict(con.execute("SELECT model_id, count(*) FROM scores WHERE model = 'ref' GROUP BY 1").fetchall()) == \
        {"tiny-large": tokens, "tiny-small": tokens}  # both fillings of the role are kept
    gap = dict(con.execute("SELECT config_id, max(abs(value)) FROM token_rewards WHERE kind = 'dpo' GROUP BY 1").fetchall())
    # the run's policy is tiny-small: against itself as ref every dpo reward is 0; against tiny-large it is not
    assert gap[again.config_ids()["dpo"]] < 1e-5
    assert gap[first.config_ids()["dpo"]] > 0.1


def test_a_lake_model_named_by_its_lake_path_loads_from_the_lake(copy_lake):
    import shutil

    from tokenmill.errors import EngineError
    from tokenmill.models.registry import resolve_model
    from tokenmill.tasks.score import model_source

    lake = Lake(copy_lake)
    rel = "_artifacts/models/abc123"
    with pytest.raises(EngineError, match="no finished model artifact '_artifacts/models/abc123'"):
        model_source(lake, rel)
    shutil.copytree(resolve_model("tiny-large").path, copy_lake / rel)
    (copy_lake / rel / "DONE").write_bytes(b"")
    assert model_source(lake, rel) == str(copy_lake / rel)
    assert model_source(lake, "tiny-small") == "tiny-small"
    labeler = RewardsLabeler(RewardsConfig(kinds=["dpo"]), models={"ref": rel})
    for shard in lake.files("rollouts", "r1"):
        labeler.label_shard(lake, "r1", shard)
    con = connect(lake)
    # recorded by its lake path: the same config id wherever the lake is mounted
    assert con.execute("SELECT DISTINCT models FROM token_rewards").fetchall() == [(f'{{"dpo":"policy","ref":"{rel}"}}',)]
    assert con.execute("SELECT DISTINCT model_id FROM scores WHERE model = 'ref'").fetchall() == [(rel,)]


def test_the_label_summary_shows_each_model_that_filled_a_role(labelled):
    from tokenmill.report.summary import label_summary

    lake, _, _ = labelled
    again = RewardsLabeler(RewardsConfig(kinds=["dpo"]), models={"ref": "tiny-small"})
    for shard in lake.files("rollouts", "r1"):
        again.label_shard(lake, "r1", shard)
    scores = {r["output"]: r["rows"] for r in label_summary(lake, "r1").to_pylist() if r["labeler"] == "score"}
    tokens = connect(lake).execute("SELECT count(*) FROM tokens").fetchone()[0]
    assert scores == {"policy": tokens, "ref = tiny-large": tokens, "ref = tiny-small": tokens}
