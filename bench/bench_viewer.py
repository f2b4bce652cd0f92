"""Viewer responsiveness on a large run: one page at a time against loading the run.

    python bench/bench_viewer.py [--prompts 256] [--samples 4] [--copies 100]

tiny-small rolls out on `--prompts` arithmetic prompts × `--samples` samples, and every
token gets `grpo` and `dpo` token rewards (not timed). The run's rollouts, tokens and
rewards files are then committed `--copies` times more with fresh rollout ids, so the run
is large (real rows, repeated). Timed, what the page asks when a user opens the run and a
rollout (`report/token_view.py` over one DuckDB connection, as `tokenmill view` serves it):

* first page      the first 50 rollouts (with their count)
* filtered page   50 rollouts matching `reward < 1 AND num_tokens > 20`, from the middle
* one rollout     its tokens with every label and span

against what a viewer that loads the run first has to do before it can show anything:
read the run's rollouts, tokens and token rewards into memory (pyarrow, all threads).

Printed: seconds of each, and load-everything / (first page + one rollout).
"""

from __future__ import annotations

import argparse
import os
import time


def add_rewards(lake, run: str) -> None:
    import numpy as np
    import pyarrow as pa

    from tokenmill.schema import TOKEN_REWARDS
    from tokenmill.labelers.base import provenance

    t = lake.read("tokens", run, columns=["rollout_id", "pos"])
    n = t.num_rows
    rng = np.random.default_rng(0)
    for kind in ("grpo", "dpo"):
        lake.commit("token_rewards", run, pa.table({
            "rollout_id": t.column("rollout_id"), "pos": t.column("pos"), "kind": [kind] * n,
            "value": pa.array(rng.normal(size=n), pa.float32()), "flag": pa.nulls(n, pa.bool_()),
            **provenance(n, "rewards", "bench", {}, {}, kind)}, schema=TOKEN_REWARDS.schema))


def copy_run(lake, run: str, copies: int, progress) -> None:
    """Commit the run's rollouts, tokens and token rewards `copies` more times, rollout ids
    suffixed with the copy number (so every key stays unique)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = {name: lake.read(name, run) for name in ("rollouts", "tokens", "token_rewards")}
    for k in range(copies):
        for name, t in tables.items():
            t = t.drop_columns([c for c in ("run_id",) if c in t.column_names])
            rid = pc.binary_join_element_wise(t.column("rollout_id"), pa.scalar(f"{k:04d}"), "-")
            lake.commit(name, run, t.set_column(t.schema.get_field_index("rollout_id"), "rollout_id", rid))
        progress(k + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--copies", type=int, default=100)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    import pyarrow.dataset as ds
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
    from rollout_lake import rollout_lake  # bench/ is on sys.path when a bench runs as a script

    from tokenmill.report import token_view as V
    from tokenmill.storage.catalog import connect
    from tokenmill.storage.lake import Lake

    console = Console(width=140)
    root = rollout_lake(console, "viewer", "tiny-small", "arithmetic", args.prompts, args.samples, 1.0, 64)
    lake = Lake(root)
    add_rewards(lake, "b")
    with Progress(console=console) as bar:
        task = bar.add_task("copying the run", total=args.copies)
        copy_run(lake, "b", args.copies, lambda k: bar.update(task, completed=k))
    con = connect(lake, read_only=True)
    rollouts = V.list_rollouts(con, "b", limit=1)["total"]
    tokens = con.sql("SELECT count(*) FROM tokens WHERE run_id = 'b'").fetchall()[0][0]

    def timed(fn, repeats: int = 5) -> float:
        fn()  # warm: file metadata, DuckDB's caches — a server answers many requests
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    first = V.list_rollouts(con, "b", limit=50)["rows"]
    rid = first[0]["rollout_id"]
    results = {
        "first page (50 rollouts)": timed(lambda: V.list_rollouts(con, "b", limit=50)),
        "filtered page, middle": timed(lambda: V.list_rollouts(con, "b", "reward < 1 AND num_tokens > 20",
                                                               offset=rollouts // 4, limit=50)),
        "one rollout, every label": timed(lambda: V.rollout_detail(con, "b", rid)),
    }

    def load_everything() -> int:
        n = 0
        for name in ("rollouts", "tokens", "token_rewards"):
            n += ds.dataset(lake.table_path(name), format="parquet", partitioning="hive").to_table().num_rows
        return n

    results["load the run (baseline)"] = timed(load_everything, repeats=2)
    table = Table(title=f"viewer on one run: {rollouts:,} rollouts, {tokens:,} tokens, {2 * tokens:,} token rewards")
    for col in ("what", "seconds"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for name, sec in results.items():
        table.add_row(name, f"{sec:.4f}")
    console.print(table)
    open_rollout = results["first page (50 rollouts)"] + results["one rollout, every label"]
    console.print(f"opening a rollout: {open_rollout:.3f} s; loading the run first: "
                  f"{results['load the run (baseline)']:.3f} s → {results['load the run (baseline)'] / open_rollout:.1f}× faster")


if __name__ == "__main__":
    main()
