"""Token-lake benchmark: commit throughput and query time, each beside a plain baseline.

    python bench/bench_lake.py [--rows 10000000] [--shard-rows 1000000] [--runs 4] [--dir DIR]

Measured in one run, on the same synthetic `tokens` shards (schema: tokenmill.schema.TOKENS):

(a) write   `Lake.commit("tokens", run_id, shard)` (schema conform, per-partition dedupe,
            content-named file, temp write + rename, lock) vs a plain
            `pyarrow.parquet.write_table(shard, path, compression="zstd")` of the same shard;
(b) query   DuckDB over the lake's views (`tokenmill.storage.catalog.connect`) vs polars
            `scan_parquet(...).group_by(...)` on the same files: a per-run aggregate over all
            rows, and a per-rollout aggregate with ORDER BY … LIMIT 100;
(c) re-commit of an already committed shard (an idempotent no-op: 0 rows written).

Shard generation is vectorised (numpy/pyarrow) and excluded from every timing. Query
times are the best of `--repeat` runs (files are in the OS page cache after writing).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenmill import schema as S  # noqa: E402
from tokenmill.storage.catalog import connect  # noqa: E402
from tokenmill.storage.lake import Lake  # noqa: E402

TOP_K = 5


def make_shard(shard: int, rows: int, mean_len: int = 128, seed: int = 0) -> pa.Table:
    """`rows` token rows of rollouts with random lengths; deterministic in (seed, shard)."""
    rng = np.random.default_rng([seed, shard])
    lengths = rng.integers(mean_len // 4, 2 * mean_len - mean_len // 4, size=rows // (mean_len // 4) + 1)
    ends = np.cumsum(lengths)
    n_roll = int(np.searchsorted(ends, rows)) + 1
    lengths = lengths[:n_roll].copy()
    lengths[-1] -= int(ends[n_roll - 1]) - rows  # the last rollout is cut so the shard has exactly `rows`
    # 16-hex rollout ids, as tokenmill.ids makes them; one Python op per rollout, none per token
    rid_vals = rng.integers(0, 2**63, size=n_roll, dtype=np.int64)
    rid = pa.array([f"{v:016x}" for v in rid_vals.tolist()], pa.string())
    roll_of_row = np.repeat(np.arange(n_roll), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos = (np.arange(rows) - starts).astype(np.int32)
    logprob = -rng.exponential(0.7, size=rows).astype(np.float32)
    entropy = rng.gamma(2.0, 0.5, size=rows).astype(np.float32)
    offsets = pa.array(np.arange(0, TOP_K * rows + 1, TOP_K, dtype=np.int32))
    topk_ids = pa.ListArray.from_arrays(offsets, pa.array(rng.integers(0, 32000, TOP_K * rows, dtype=np.int32)))
    topk_lp = pa.ListArray.from_arrays(
        offsets, pa.array(np.sort(-rng.exponential(1.5, TOP_K * rows).astype(np.float32).reshape(rows, TOP_K), 1)[:, ::-1].ravel())
    )
    char_start = pos * 3
    return pa.table(
        {
            "rollout_id": rid.take(pa.array(roll_of_row)),
            "pos": pos,
            "token_id": rng.integers(0, 32000, size=rows, dtype=np.int32),
            "logprob": logprob,
            "entropy": entropy,
            "topk_ids": topk_ids,
            "topk_logprobs": topk_lp,
            "char_start": char_start,
            "char_end": char_start + 3,
        },
        schema=S.TOKENS.schema,
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.parquet"))


def best_of(fn, repeat: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="token rows in all (default 10M)")
    ap.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per commit (default 1M)")
    ap.add_argument("--runs", type=int, default=4, help="run_ids the shards are spread over (default 4)")
    ap.add_argument("--repeat", type=int, default=3, help="query repetitions, best reported (default 3)")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir, removed after)")
    args = ap.parse_args()

    import duckdb
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(130, shutil.get_terminal_size((130, 24)).columns))
    own_dir = args.dir is None
    work = Path(args.dir or tempfile.mkdtemp(prefix="tokenmill-bench-lake-"))
    work.mkdir(parents=True, exist_ok=True)
    lake_dir, base_dir = work / "lake", work / "baseline"
    if lake_dir.exists() or base_dir.exists():
        sys.exit(f"{work} already holds lake/ or baseline/: give an empty --dir")
    try:
        lake = Lake(lake_dir)
        n_shards = -(-args.rows // args.shard_rows)
        shard_rows = [min(args.shard_rows, args.rows - i * args.shard_rows) for i in range(n_shards)]
        run_of = [f"bench-run-{i % args.runs}" for i in range(n_shards)]
        console.print(f"[bold]bench_lake[/]: {args.rows:,} token rows in {n_shards} shards over "
                      f"{min(args.runs, n_shards)} run_ids; dir {work}; pyarrow {pa.__version__}, "
                      f"duckdb {duckdb.__version__}, polars {pl.__version__}, {os.cpu_count()} CPUs; "
                      f"load average {os.getloadavg()[0]:.2f}")

        # ---------------------------------------------------------------- (a) writes
        t_lake, t_base, t_gen, first_commit = 0.0, 0.0, 0.0, None
        for i, rows in enumerate(shard_rows):
            t0 = time.perf_counter()
            shard = make_shard(i, rows)
            t_gen += time.perf_counter() - t0
            # alternate which writer goes first so neither always gets the warmer cache
            order = ("lake", "base") if i % 2 == 0 else ("base", "lake")
            for who in order:
                t0 = time.perf_counter()
                if who == "lake":
                    res = lake.commit("tokens", run_of[i], shard)
                    assert res.rows_written == rows and res.rows_skipped == 0, res
                    dt = time.perf_counter() - t0
                    t_lake += dt
                    if i == 0:
                        first_commit = dt
                else:
                    d = base_dir / f"run_id={run_of[i]}"
                    d.mkdir(parents=True, exist_ok=True)
                    pq.write_table(shard, d / f"part-{i:05d}.parquet", compression="zstd")
                    t_base += time.perf_counter() - t0
            del shard
        lake_bytes, base_bytes = dir_bytes(lake_dir), dir_bytes(base_dir)

        # ---------------------------------------------------------------- (c) re-commit
        shard0 = make_shard(0, shard_rows[0])
        t0 = time.perf_counter()
        res = lake.commit("tokens", run_of[0], shard0)
        t_recommit = time.perf_counter() - t0
        assert res.rows_written == 0 and res.rows_skipped == shard_rows[0] and res.path is None, res
        del shard0

        # ---------------------------------------------------------------- (b) queries
        q_runs = "SELECT run_id, count(*) AS n, avg(logprob) AS mean_lp, avg(entropy) AS mean_ent FROM tokens GROUP BY run_id ORDER BY run_id"
        q_roll = ("SELECT rollout_id, count(*) AS n, avg(logprob) AS mean_lp FROM tokens "
                  "GROUP BY rollout_id ORDER BY 3 LIMIT 100")
        t0 = time.perf_counter()
        con = connect(lake)
        t_connect = time.perf_counter() - t0
        d_runs = best_of(lambda: con.sql(q_runs).to_arrow_table(), args.repeat)
        d_roll = best_of(lambda: con.sql(q_roll).to_arrow_table(), args.repeat)
        n_rollouts = con.execute("SELECT count(DISTINCT rollout_id) FROM tokens").fetchone()[0]
        con.close()

        glob = str(lake_dir / "tokens" / "run_id=*" / "*.parquet")

        def pl_runs():
            return (pl.scan_parquet(glob, hive_partitioning=True)
                    .group_by("run_id")
                    .agg(pl.len().alias("n"), pl.col("logprob").mean().alias("mean_lp"),
                         pl.col("entropy").mean().alias("mean_ent"))
                    .sort("run_id").collect())

        def pl_roll():
            return (pl.scan_parquet(glob, hive_partitioning=True)
                    .group_by("rollout_id")
                    .agg(pl.len().alias("n"), pl.col("logprob").mean().alias("mean_lp"))
                    .sort("mean_lp").head(100).collect())

        p_runs = best_of(pl_runs, args.repeat)
        p_roll = best_of(pl_roll, args.repeat)

        # the two engines must agree, or the timings compare different work
        dr, pr = d_runs[2], p_runs[2]
        assert dr.column("run_id").to_pylist() == pr["run_id"].to_list()
        assert dr.column("n").to_pylist() == pr["n"].to_list() and sum(pr["n"].to_list()) == args.rows
        assert np.allclose(dr.column("mean_lp").to_numpy(), pr["mean_lp"].to_numpy(), rtol=1e-5)
        assert np.allclose(dr.column("mean_ent").to_numpy(), pr["mean_ent"].to_numpy(), rtol=1e-5)
        assert dr.column("n").to_pylist() == [sum(r for r, run in zip(shard_rows, run_of) if run == k)
                                              for k in dr.column("run_id").to_pylist()]
        assert set(d_roll[2].column("rollout_id").to_pylist()) == set(p_roll[2]["rollout_id"].to_list()), \
            "duckdb and polars disagree on the per-rollout top-100"

        # ---------------------------------------------------------------- report
        rows = args.rows
        t = Table(title=f"token lake: {rows:,} rows, {n_shards} shards × ≤{args.shard_rows:,}, "
                        f"{len(set(run_of))} runs, {n_rollouts:,} rollouts")
        for col, just in [("measure", "left"), ("tokenmill", "right"), ("baseline", "right"),
                          ("ratio tm/base", "right"), ("baseline", "left")]:
            t.add_column(col, justify=just)
        t.add_row("(a) write rows/s (higher is better)", f"{rows / t_lake:,.0f}", f"{rows / t_base:,.0f}",
                  f"{t_base / t_lake:.2f}", "pq.write_table(zstd), same shards")
        t.add_row("(a) write total s", f"{t_lake:.2f}", f"{t_base:.2f}", f"{t_lake / t_base:.2f}", "")
        t.add_row("(a) bytes on disk", f"{lake_bytes / 1e6:,.1f} MB", f"{base_bytes / 1e6:,.1f} MB",
                  f"{lake_bytes / base_bytes:.2f}", "")
        t.add_row("(b) GROUP BY run_id s, best (median)", f"{d_runs[0]:.3f} ({d_runs[1]:.3f})",
                  f"{p_runs[0]:.3f} ({p_runs[1]:.3f})", f"{d_runs[0] / p_runs[0]:.2f}",
                  "polars scan_parquet, same files")
        t.add_row("(b) GROUP BY rollout_id top-100 s", f"{d_roll[0]:.3f} ({d_roll[1]:.3f})",
                  f"{p_roll[0]:.3f} ({p_roll[1]:.3f})", f"{d_roll[0] / p_roll[0]:.2f}",
                  "polars scan_parquet, same files")
        t.add_row("(b) GROUP BY run_id rows/s", f"{rows / d_runs[0]:,.0f}", f"{rows / p_runs[0]:,.0f}",
                  f"{p_runs[0] / d_runs[0]:.2f}", "")
        t.add_row("(b) catalog.connect s", f"{t_connect:.3f}", "", "", "")
        t.add_row("(c) re-commit shard 0 (no-op) s", f"{t_recommit:.3f}", f"{first_commit:.3f}",
                  f"{t_recommit / first_commit:.2f}", "first commit of shard 0")
        console.print(t)
        console.print(f"shard generation (excluded): {t_gen:.1f} s;  peak RSS: {peak_rss_mb():,.0f} MB")
        console.print("load average at the end (1, 5, 15 min): %.2f %.2f %.2f — other work on this machine skews every figure" % os.getloadavg())
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
