"""The lake on object storage: a real S3-compatible server (moto's server mode) on loopback."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from tokenmill.config import LabelConfig, RewardsConfig, RolloutConfig, SamplingConfig, SourceConfig
from tokenmill.errors import LakeError
from tokenmill.storage.catalog import run_query
from tokenmill.storage.lake import DONE_MARKER, Lake

sys.path.insert(0, str(Path(__file__).parent))
from test_lake import rollouts_table, tokens_table  # noqa: E402

TOKENMILL = str(Path(sys.executable).with_name("tokenmill"))


def objects(lake: Lake) -> list[str]:
    """Every object key under the lake, as the S3 API lists them."""
    bucket, prefix = lake.root.split("/", 1)
    endpoint = dict(p.split("=", 1) for p in lake.uri.split("?", 1)[1].split("&"))["endpoint_override"]
    s3 = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", []))


def test_lake_uri_keeps_its_query_parameters(s3_lake):
    lake = Lake(s3_lake)
    assert lake.uri == s3_lake and "endpoint_override=" in lake.uri
    assert not lake.is_local and lake.root.endswith("/lake") and "?" not in lake.root
    assert Lake(lake.uri).root == lake.root  # every Prefect task re-opens Lake(uri)


def test_s3_lake_commit_read_dedupe_and_check(s3_lake):
    lake = Lake(s3_lake)
    first = lake.commit("tokens", "20261122", tokens_table(["a", "b"]))
    again = lake.commit("tokens", "20261122", tokens_table(["a", "b"]))
    overlap = lake.commit("tokens", "20261122", tokens_table(["b", "c"]))
    assert (first.rows_written, again.rows_written, again.path) == (6, 0, None)
    assert (overlap.rows_written, overlap.rows_skipped) == (3, 3)
    lake.commit("rollouts", "r2", rollouts_table(["a", "b", "c"]))
    back = lake.read("tokens")
    assert back.num_rows == 9 and set(back.column("run_id").to_pylist()) == {"20261122"}
    assert lake.runs("tokens") == ["20261122"] and lake.tables() == ["rollouts", "tokens"]
    assert len(lake.files("tokens")) == 2
    # identical concurrent commits name the same object: one file, no duplicate rows
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: lake.commit("tokens", "x", tokens_table(["d", "e"])), range(4)))
    assert len(lake.files("tokens", "x")) == 1 and lake.read("tokens", "x").num_rows == 6
    # only complete *.parquet objects, no temp objects: a single PUT per commit
    keys = [k for k in objects(lake) if k and not k.endswith("/")]  # "dir/" keys are directory markers
    assert all(k.endswith(".parquet") for k in keys), keys
    assert lake.check() == []
    rows = run_query(lake, "SELECT run_id, count(*) AS n FROM tokens GROUP BY 1 ORDER BY 1").to_pylist()
    assert rows == [{"run_id": "20261122", "n": 9}, {"run_id": "x", "n": 6}]
    assert run_query(lake, "SELECT count(*) AS n FROM rollouts WHERE run_id = 'r2'").to_pylist() == [{"n": 3}]


def test_s3_lake_check_reports_an_unreadable_object(s3_lake):
    lake = Lake(s3_lake)
    lake.commit("tokens", "r1", tokens_table(["a"]))
    bad = lake.partition_path("tokens", "r1") + "/part-broken.parquet"
    with lake.fs.open_output_stream(bad) as sink:
        sink.write(b"PAR1 not really parquet")
    assert [(p.path, p.kind) for p in lake.check()] == [(bad, "unreadable")]
    with pytest.raises(LakeError, match="1 problem"):
        lake.check(strict=True)


def test_s3_lake_artifacts_copy_to_a_local_cache_marker_last(s3_lake, tmp_path):
    lake = Lake(s3_lake)
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "config.json").write_text('{"a": 1}')
    lake.put_dir(src, "_artifacts/models/m1")
    assert lake.has_dir("_artifacts/models/m1")
    assert set(objects(lake)) >= {"_artifacts/models/m1/weights.bin", "_artifacts/models/m1/sub/config.json",
                                  f"_artifacts/models/m1/{DONE_MARKER}"}
    local = Path(lake.local_dir("_artifacts/models/m1", tmp_path / "cache"))
    assert (local / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert (local / "sub" / "config.json").read_text() == '{"a": 1}' and (local / DONE_MARKER).exists()
    assert not [p for p in local.rglob("*") if p.name.endswith(".tmp")]
    assert lake.local_dir("_artifacts/models/m1", tmp_path / "cache") == str(local)  # cached
    # an artifact whose copy into the lake never finished is not handed out
    with lake.fs.open_output_stream(lake.path("_artifacts/models/m2/weights.bin")) as sink:
        sink.write(b"half")
    assert not lake.has_dir("_artifacts/models/m2")
    with pytest.raises(LakeError, match="incomplete"):
        lake.local_dir("_artifacts/models/m2", tmp_path / "cache")


def test_s3_lake_scratch_files_round_trip_and_stay_out_of_tables(s3_lake):
    lake = Lake(s3_lake)
    data = tokens_table(["a"])
    lake.write_scratch("gen/shard-1.parquet", data)
    assert lake.exists("_staging/gen/shard-1.parquet") and not lake.exists("_staging/gen/shard-2.parquet")
    assert lake.read_scratch("gen/shard-1.parquet").equals(data)
    assert lake.tables() == [] and lake.check() == []
    assert pq.read_table(lake.scratch_path("gen/shard-1.parquet"), filesystem=lake.fs).num_rows == 3


def _rollouts_cfg(lake: str) -> RolloutConfig:
    return RolloutConfig(lake=lake, run_id="s3run", models=["tiny-small"], shard_size=4,
                         sources=[SourceConfig(world="arithmetic", n=8, seed=1)],
                         sampling=SamplingConfig(n=2, max_tokens=32, seed=1))


def _label_cfg(lake: str) -> LabelConfig:
    return LabelConfig(lake=lake, run_id="s3run", labelers=["rewards"], models={"ref": "tiny-small"},
                       rewards=RewardsConfig(kinds=["dpo", "grpo"]))


def _counts(lake: str) -> dict:
    sql = ("SELECT 'prompts' t, count(*) n FROM prompts UNION ALL SELECT 'rollouts', count(*) FROM rollouts "
           "UNION ALL SELECT 'tokens', count(*) FROM tokens UNION ALL SELECT 'scores', count(*) FROM scores "
           "UNION ALL SELECT 'token_rewards', count(*) FROM token_rewards")
    return {r["t"]: r["n"] for r in run_query(Lake(lake), sql).to_pylist()}


@pytest.mark.slow
def test_rollouts_and_label_flows_on_an_s3_lake_are_queryable_and_idempotent(prefect_harness, s3_lake, tmp_path,
                                                                              monkeypatch):
    # an object-store lake's plots go to ./tokenmill-reports/: keep them out of the checkout
    monkeypatch.chdir(tmp_path)
    from tokenmill.flows.label import label_flow
    from tokenmill.flows.rollouts import rollouts_flow

    rolled = rollouts_flow(_rollouts_cfg(s3_lake))
    labelled = label_flow(_label_cfg(s3_lake))
    assert rolled["rollouts"] == 16 and labelled["shards"] == 2
    counts = _counts(s3_lake)
    assert counts["prompts"] == 8 and counts["rollouts"] == 16 and counts["tokens"] == rolled["tokens"]
    # dpo scores every token under the `policy` and `ref` roles; rewards: one row per token and kind
    assert counts["scores"] == 2 * counts["tokens"] and counts["token_rewards"] == 2 * counts["tokens"]
    # the command line reads the same lake through the same URI
    out = subprocess.run([TOKENMILL, "sql", "--lake", s3_lake, "--format", "csv",
                          "SELECT count(*) AS n, count(DISTINCT rollout_id) AS r FROM rollouts WHERE run_id = 's3run'"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "16,16"
    lake = Lake(s3_lake)
    assert lake.check() == []
    files = {t: lake.files(t) for t in counts}
    # a re-run finds everything done: no rows, no objects added
    again = rollouts_flow(_rollouts_cfg(s3_lake))
    label_flow(_label_cfg(s3_lake))
    assert again["rollouts"] == 16  # what the run holds, not what it wrote
    assert _counts(s3_lake) == counts and {t: lake.files(t) for t in counts} == files
