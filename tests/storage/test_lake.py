"""The lake: round trips, idempotent and atomic commits, validation, crash safety."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tokenmill import schema as S
from tokenmill.errors import LakeError
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake

REPO = Path(__file__).resolve().parents[2]


def tokens_table(rollouts: list[str], per: int = 3) -> pa.Table:
    n = len(rollouts) * per
    return pa.table(
        {
            "rollout_id": np.repeat(np.array(rollouts, dtype=object), per),
            "pos": np.tile(np.arange(per, dtype=np.int32), len(rollouts)),
            "token_id": np.arange(n, dtype=np.int32) + 100,
            "logprob": -np.linspace(0.0, 1.0, n, dtype=np.float32),
            "entropy": pa.array([None if i % 2 else 0.5 * i for i in range(n)], pa.float32()),
            "topk_ids": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int32())),
            "topk_logprobs": pa.array([[-0.1, -2.5]] * n, pa.list_(pa.float32())),
            "char_start": np.arange(n, dtype=np.int32),
            "char_end": np.arange(n, dtype=np.int32) + 1,
        }
    )


def rollouts_table(ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "rollout_id": ids,
            "prompt_id": [f"p{i % 2}" for i in range(n)],
            "sample_index": pa.array(range(n), pa.int32()),
            "source": ["arith"] * n,
            "world": [None] * n,
            "model": ["tiny-llama"] * n,
            "engine": ["hf"] * n,
            "prompt_token_ids": pa.array([[1, 2, 3]] * n, pa.list_(pa.int32())),
            "completion_token_ids": pa.array([[4, 5 + i] for i in range(n)], pa.list_(pa.int32())),
            "completion": [f"answer {i}\nline two" for i in range(n)],
            "num_tokens": pa.array([2] * n, pa.int32()),
            "finish_reason": ["stop"] * n,
            "temperature": pa.array([0.7] * n, pa.float32()),
            "top_p": pa.array([0.95] * n, pa.float32()),
            "max_tokens": pa.array([64] * n, pa.int32()),
            "seed": pa.array([2**40 + i for i in range(n)], pa.int64()),
            "sampling": ['{"t":0.7}'] * n,
            "logprobs_kind": ["raw"] * n,
            "prompt_format": [None] * n,
            "reward": pa.array([1.0 if i % 2 else None for i in range(n)], pa.float32()),
            "verdict": ["correct"] * n,
            "verifier": ["arith-v1"] * n,
            "verify_detail": ["{}"] * n,
            "created_at": pa.array(
                [dt.datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)] * n,
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def view_count(lake: Lake, table: str) -> int:
    con = connect(lake)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


# ------------------------------------------------------------------ round trips


def test_commit_then_read_round_trips_values_and_types(tmp_path):
    lake = Lake(tmp_path)
    data = rollouts_table(["r1", "r2", "r3"])
    res = lake.commit("rollouts", "run-a", data)
    assert (res.rows_written, res.rows_skipped) == (3, 0)

    back = lake.read("rollouts")
    assert back.column_names == S.ROLLOUTS.schema.names + ["run_id"]
    assert back.schema.field("run_id").type == pa.string()
    assert back.drop_columns(["run_id"]).cast(S.ROLLOUTS.schema).equals(data.cast(S.ROLLOUTS.schema))
    for field in S.ROLLOUTS.schema:
        assert back.schema.field(field.name).type == field.type, field.name
    assert back.column("run_id").to_pylist() == ["run-a"] * 3


@pytest.mark.parametrize("run_id", ["20261122", "007", "1e5"])
def test_all_digit_run_id_stays_a_string(tmp_path, run_id):
    lake = Lake(tmp_path)
    lake.commit("tokens", run_id, tokens_table(["a"]))
    back = lake.read("tokens")
    assert back.schema.field("run_id").type == pa.string()
    assert set(back.column("run_id").to_pylist()) == {run_id}  # "007" keeps its zeros
    assert lake.runs("tokens") == [run_id]


def test_read_selects_runs_columns_and_filter(tmp_path):
    lake = Lake(tmp_path)
    lake.commit("tokens", "r1", tokens_table(["a", "b"]))
    lake.commit("tokens", "r2", tokens_table(["c"]))
    lake.commit("tokens", "r3", tokens_table(["d"]))

    assert lake.read("tokens", run_id="r2").num_rows == 3
    assert lake.read("tokens", run_id=["r1", "r3"]).num_rows == 9
    cols = lake.read("tokens", columns=["rollout_id", "run_id"])
    assert cols.column_names == ["rollout_id", "run_id"]
    only_b = lake.read("tokens", filter=ds.field("rollout_id") == "b")
    assert only_b.column("pos").to_pylist() == [0, 1, 2]
    by_run = lake.read("tokens", filter=ds.field("run_id") == "r3")
    assert set(by_run.column("rollout_id").to_pylist()) == {"d"}
    with pytest.raises(LakeError, match="nope"):
        lake.read("tokens", columns=["nope"])


def test_read_of_table_without_data_is_empty_with_schema(tmp_path):
    lake = Lake(tmp_path / "never-written")
    empty = lake.read("tokens")
    assert empty.num_rows == 0
    assert empty.schema.names == S.TOKENS.schema.names + ["run_id"]
    assert lake.runs() == [] and lake.tables() == [] and lake.files("tokens") == []


def test_read_ignores_hidden_underscore_and_non_parquet_files(tmp_path):
    lake = Lake(tmp_path)
    lake.commit("tokens", "r1", tokens_table(["a"]))
    part = tmp_path / "tokens" / "run_id=r1"
    for junk in [".hidden.parquet", "_SUCCESS", "_meta.parquet", "notes.txt", ".part-x.parquet.123.tmp"]:
        (part / junk).write_bytes(b"not parquet at all")
    assert len(lake.files("tokens")) == 1
    assert lake.read("tokens").num_rows == 3
    assert view_count(lake, "tokens") == 3


def test_runs_and_tables_list_what_holds_data(tmp_path):
    lake = Lake(tmp_path)
    lake.commit("tokens", "b-run", tokens_table(["x"]))
    lake.commit("tokens", "a-run", tokens_table(["y"]))
    lake.commit("rollouts", "a-run", rollouts_table(["y"]))
    assert lake.runs("tokens") == ["a-run", "b-run"]
    assert lake.runs() == ["a-run"]
    assert lake.tables() == ["rollouts", "tokens"]


def test_unknown_table_raises_lake_error_listing_tables(tmp_path):
    with pytest.raises(LakeError, match="tokens"):
        Lake(tmp_path).commit("tokenz", "r1", tokens_table(["a"]))


# ------------------------------------------------------------------ idempotency


def test_committing_same_batch_twice_adds_no_rows_and_no_files(tmp_path):
    lake = Lake(tmp_path)
    data = tokens_table(["a", "b"])
    first = lake.commit("tokens", "r1", data)
    second = lake.commit("tokens", "r1", data)
    assert first.rows_written == 6
    assert (second.rows_written, second.rows_skipped, second.path) == (0, 6, None)
    assert len(parquet_files(tmp_path)) == 1
    assert lake.read("tokens").num_rows == 6


def test_overlapping_batch_writes_only_new_rows(tmp_path):
    lake = Lake(tmp_path)
    lake.commit("tokens", "r1", tokens_table(["a", "b"]))
    res = lake.commit("tokens", "r1", tokens_table(["b", "c"]))
    assert (res.rows_written, res.rows_skipped) == (3, 3)
    back = lake.read("tokens")
    assert back.num_rows == 9
    assert sorted(set(back.column("rollout_id").to_pylist())) == ["a", "b", "c"]
    assert len(parquet_files(tmp_path)) == 2


def test_same_ids_in_another_run_are_not_duplicates(tmp_path):
    lake = Lake(tmp_path)
    lake.commit("tokens", "r1", tokens_table(["a"]))
    res = lake.commit("tokens", "r2", tokens_table(["a"]))
    assert res.rows_written == 3


def test_file_name_depends_on_content_not_row_order(tmp_path):
    data = tokens_table(["a", "b", "c"])
    shuffled = data.take(np.random.default_rng(0).permutation(data.num_rows))
    p1 = Lake(tmp_path / "one").commit("tokens", "r1", data).path
    p2 = Lake(tmp_path / "two").commit("tokens", "r1", shuffled).path
    p3 = Lake(tmp_path / "three").commit("tokens", "r2", data).path
    assert Path(p1).name == Path(p2).name  # identical concurrent commits meet on one file
    assert Path(p1).name != Path(p3).name
    assert Path(p1).name.startswith("part-") and p1.endswith(".parquet")


def test_concurrent_overlapping_commits_write_each_row_once(tmp_path):
    lake = Lake(tmp_path)
    batches = [tokens_table([f"r{i}", f"r{i + 1}", f"r{i + 2}"], per=50) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda b: lake.commit("tokens", "r1", b), batches))
    back = lake.read("tokens", columns=["rollout_id", "pos"])
    assert back.num_rows == 14 * 50  # r0..r13, each once
    assert back.group_by(["rollout_id", "pos"]).aggregate([]).num_rows == back.num_rows
    assert sum(r.rows_written for r in results) == back.num_rows


# ------------------------------------------------------------------ atomicity


def test_interrupted_write_leaves_no_parquet_file_and_next_commit_succeeds(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    lake.commit("tokens", "r1", tokens_table(["a"]))
    con = connect(lake)  # one connection across the failure: its glob re-reads the directory
    before = con.execute("SELECT count(*) FROM tokens").fetchone()[0]

    real_write = pq.write_table

    seen_mid_write = []

    def write_half_then_fail(table, where, **kw):
        where.write(b"PAR1" + b"\x00" * 4096)  # a partial file's worth of bytes
        where.flush()
        # while the partial bytes sit on disk, readers must not see them
        seen_mid_write.append((len(parquet_files(tmp_path)), con.execute("SELECT count(*) FROM tokens").fetchone()[0]))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        lake.commit("tokens", "r1", tokens_table(["b"]))

    assert seen_mid_write == [(1, before)]
    assert [p.name for p in parquet_files(tmp_path)] == [Path(lake.files("tokens")[0]).name]
    assert not list(tmp_path.rglob("*.tmp"))  # the temp file was cleaned up too
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == before
    assert lake.check() == []

    monkeypatch.setattr(pq, "write_table", real_write)
    res = lake.commit("tokens", "r1", tokens_table(["b"]))
    assert res.rows_written == 3
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == before + 3


_CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, pyarrow as pa
    from tokenmill.storage.lake import Lake

    root, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    ids = pa.array([f"r{i:05d}" for i in range(2000)])
    k = 8
    topk = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)),
        pa.array(rng.integers(0, 50000, n * k, dtype=np.int32)),
    )
    topk_lp = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)),
        pa.array(rng.random(n * k, dtype=np.float32)),
    )
    table = pa.table({
        "rollout_id": ids.take(pa.array(np.arange(n) % 2000)),
        "pos": np.arange(n, dtype=np.int32),
        "token_id": rng.integers(0, 50000, n, dtype=np.int32),
        "logprob": rng.random(n, dtype=np.float32),
        "entropy": rng.random(n, dtype=np.float32),
        "topk_ids": topk,
        "topk_logprobs": topk_lp,
        "char_start": np.arange(n, dtype=np.int32),
        "char_end": np.arange(n, dtype=np.int32),
    })
    print("READY", flush=True)
    Lake(root).commit("tokens", "crash", table)
    print("DONE", flush=True)
    """
)


def test_sigkilled_commit_leaves_nothing_visible_but_check_reports_temp(tmp_path):
    n = 4_000_000
    lake = Lake(tmp_path / "lake")
    part = tmp_path / "lake" / "tokens" / "run_id=crash"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, str(tmp_path / "lake"), str(n)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        temp = None
        while time.monotonic() < deadline and proc.poll() is None:
            temps = list(part.glob(".*.tmp")) if part.exists() else []
            if temps and temps[0].stat().st_size > 0:  # killed mid-write, bytes on disk
                temp = temps[0]
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert temp is not None, f"commit finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL

    # readers see nothing: no final file, DuckDB's glob finds no parquet, the view counts 0
    assert lake.files("tokens") == []
    assert list(part.glob("*.parquet")) == []
    assert view_count(lake, "tokens") == 0
    with pytest.raises(duckdb.IOException):
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{part}/*.parquet')").fetchall()

    problems = lake.check()
    assert [(p.kind, Path(p.path).name) for p in problems] == [("stray_temp", temp.name)]

    # the lake is still usable: a second commit of the same run goes through
    res = lake.commit("tokens", "crash", tokens_table(["after"]))
    assert res.rows_written == 3
    assert view_count(lake, "tokens") == 3


# ------------------------------------------------------------------ file metadata


def test_written_files_carry_schema_version_table_and_zstd(tmp_path):
    lake = Lake(tmp_path)
    path = lake.commit("rollouts", "r1", rollouts_table(["a"])).path
    meta = pq.read_schema(path).metadata
    assert meta[S.META_SCHEMA_VERSION] == S.SCHEMA_VERSION.encode()
    assert meta[S.META_TABLE] == b"rollouts"
    assert "run_id" not in pq.read_schema(path).names  # the partition lives in the path only
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_check_reports_newer_schema_and_corrupt_files(tmp_path):
    lake = Lake(tmp_path)
    lake.commit("tokens", "r1", tokens_table(["a"]))
    part = tmp_path / "tokens" / "run_id=r1"
    future = tokens_table(["z"]).cast(S.TOKENS.schema).replace_schema_metadata(
        {S.META_SCHEMA_VERSION: b"99", S.META_TABLE: b"tokens"}
    )
    pq.write_table(future, part / "part-future.parquet")
    (part / "part-corrupt.parquet").write_bytes(b"PAR1 garbage")

    kinds = {Path(p.path).name: p.kind for p in lake.check()}
    assert kinds == {"part-future.parquet": "newer_schema", "part-corrupt.parquet": "unreadable"}
    with pytest.raises(LakeError, match="part-future.parquet"):
        lake.check(strict=True)


# ------------------------------------------------------------------ validation


def test_missing_column_names_table_and_column(tmp_path):
    data = tokens_table(["a"]).drop_columns(["logprob"])
    with pytest.raises(LakeError) as e:
        Lake(tmp_path).commit("tokens", "r1", data)
    assert "tokens" in str(e.value) and "logprob" in str(e.value)
    assert e.value.where == "tokens.logprob"


def test_null_in_non_nullable_column_names_table_and_column(tmp_path):
    data = tokens_table(["a"])
    data = data.set_column(1, "pos", pa.array([0, None, 2], pa.int32()))
    with pytest.raises(LakeError, match=r"tokens.*pos.*null") as e:
        Lake(tmp_path).commit("tokens", "r1", data)
    assert e.value.where == "tokens.pos"
    assert "row 1" in str(e.value)
    assert parquet_files(tmp_path) == []


def test_wrong_type_names_table_and_column(tmp_path):
    data = tokens_table(["a"]).set_column(2, "token_id", pa.array(["x", "y", "z"]))
    with pytest.raises(LakeError, match="token_id") as e:
        Lake(tmp_path).commit("tokens", "r1", data)
    assert e.value.where == "tokens.token_id"


def test_compatible_types_are_cast_and_extra_columns_dropped(tmp_path):
    lake = Lake(tmp_path)
    data = tokens_table(["a"])
    data = data.set_column(1, "pos", pa.array([0, 1, 2], pa.int64())).append_column("debug", pa.array([1, 2, 3]))
    lake.commit("tokens", "r1", data)
    back = lake.read("tokens")
    assert back.schema.field("pos").type == pa.int32() and "debug" not in back.column_names


@pytest.mark.parametrize("bad", ["", "a/b", "..", "has space", "ü", "x\n"])
def test_bad_run_id_raises(tmp_path, bad):
    with pytest.raises(LakeError, match="run_id"):
        Lake(tmp_path).commit("tokens", bad, tokens_table(["a"]))
    assert parquet_files(tmp_path) == []


def test_run_id_column_that_disagrees_with_partition_raises(tmp_path):
    data = tokens_table(["a"]).append_column("run_id", pa.array(["other"] * 3))
    with pytest.raises(LakeError, match="run_id"):
        Lake(tmp_path).commit("tokens", "r1", data)


# ------------------------------------------------------------------ filesystems and URIs


def test_relative_path_and_file_uri_reach_the_same_lake(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Lake("rel-lake").commit("tokens", "r1", tokens_table(["a"]))
    same = Lake(f"file://{tmp_path}/rel-lake")
    assert same.is_local and same.root == str(tmp_path / "rel-lake")
    assert same.read("tokens").num_rows == 3


def test_unsupported_uri_raises_lake_error_naming_it():
    with pytest.raises(LakeError) as e:
        Lake("nosuchscheme://bucket/lake")
    assert "nosuchscheme://bucket/lake" in str(e.value) and e.value.fix


def test_memory_lake_commit_read_dedupe(tmp_path):
    lake = Lake(f"memory://tm-{uuid.uuid4().hex}/lake")
    assert not lake.is_local
    lake.commit("tokens", "20261122", tokens_table(["a", "b"]))
    res = lake.commit("tokens", "20261122", tokens_table(["b", "c"]))
    assert (res.rows_written, res.rows_skipped) == (3, 3)
    back = lake.read("tokens")
    assert back.num_rows == 9 and set(back.column("run_id").to_pylist()) == {"20261122"}
    assert lake.runs("tokens") == ["20261122"]
    assert lake.check() == []


def test_memory_lake_failed_write_leaves_no_object(monkeypatch):
    lake = Lake(f"memory://tm-{uuid.uuid4().hex}")

    def fail(table, where, **kw):
        where.write(b"PAR1partial")
        raise OSError("boom")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError):
        lake.commit("tokens", "r1", tokens_table(["a"]))
    monkeypatch.undo()
    assert lake.files("tokens") == [] and lake.read("tokens").num_rows == 0


# ------------------------------------------------------------------ staging


def test_scratch_files_round_trip_and_stay_out_of_tables(tmp_path):
    lake = Lake(tmp_path)
    data = tokens_table(["a"])
    path = lake.write_scratch("generate/shard-00001.parquet", data)
    assert path == f"{tmp_path}/_staging/generate/shard-00001.parquet"
    assert lake.exists("_staging/generate/shard-00001.parquet")
    assert not lake.exists("_staging/generate/shard-00002.parquet")
    assert lake.read_scratch("generate/shard-00001.parquet").equals(data)
    assert lake.tables() == [] and lake.check() == []
    assert not list(tmp_path.rglob("*.tmp"))
    (tmp_path / "_staging" / "generate" / ".shard-00002.parquet.abc.tmp").write_bytes(b"partial")
    assert [p.kind for p in lake.check()] == ["stray_temp"]
    with pytest.raises(LakeError):
        lake.read_scratch("generate/missing.parquet")
    with pytest.raises(LakeError, match="escapes"):
        lake.write_scratch("../outside.parquet", data)


def test_check_reports_temp_files_and_artifacts_left_without_their_done_marker(tmp_path):
    lake = Lake(tmp_path)
    crashed = tmp_path / "_artifacts" / "models" / "m-crashed"
    crashed.mkdir(parents=True)
    (crashed / "config.json").write_text("{}")
    done = tmp_path / "_artifacts" / "probes" / "p-done"
    done.mkdir(parents=True)
    (done / "probe.pt").write_bytes(b"x")
    (done / "DONE").write_bytes(b"")
    (done / ".probe.json.0f3a.tmp").write_bytes(b"partial")
    (tmp_path / "_reports" / "r1").mkdir(parents=True)
    (tmp_path / "_reports" / "r1" / ".accuracy.png.tmp").write_bytes(b"partial")
    (tmp_path / "_reports" / "r1" / "accuracy.png").write_bytes(b"png")

    found = sorted((p.kind, Path(p.path).relative_to(tmp_path).as_posix()) for p in lake.check())
    assert found == [("incomplete_artifact", "_artifacts/models/m-crashed"),
                     ("stray_temp", "_artifacts/probes/p-done/.probe.json.0f3a.tmp"),
                     ("stray_temp", "_reports/r1/.accuracy.png.tmp")]
    (crashed / "DONE").write_bytes(b"")
    assert [p.kind for p in lake.check()] == ["stray_temp", "stray_temp"]


def test_deep_check_finds_a_corrupt_page_behind_a_sound_footer(tmp_path):
    lake = Lake(tmp_path)
    path = lake.commit("tokens", "r1", tokens_table([f"r{i}" for i in range(200)])).path
    data = bytearray(Path(path).read_bytes())
    data[4:64] = b"\xff" * 60  # the first column chunk's page header and data; the footer is untouched
    Path(path).write_bytes(bytes(data))

    assert lake.check() == []  # footers only: looks fine
    assert [(p.kind, p.path) for p in lake.check(deep=True)] == [("unreadable", path)]
