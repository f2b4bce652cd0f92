"""Verify stage: fill each rollout's reward, verdict and verifier from its prompt.

A prompt's verifier (`verifier_name`, the name stored in `rollouts.verifier`) is, first
match wins: `prompt.meta["verifier"]` (set by the source loader from `--verifier`), a name
of `tasks/verifiers.py` (`text`, `math`, `regex`, `code-tests`, `reference-match`,
`world:<name>`); else `world:<world>` for a world prompt (that world's exact verifier);
else `reference-match` for a prompt with a reference answer (the text after the last
`Answer:`, else the last non-empty line, must equal the reference after whitespace/case
normalisation). Prompts with none stay `unverified` with a null reward. An unknown name
is a TokenmillError listing the known ones.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds import WORLDS, Verdict
from tokenmill.tasks.verifiers import get_verifier, reference_match

__all__ = ["reference_match", "verifier_name", "verify_one", "verify", "verify_and_commit"]


def verifier_name(prompt: Prompt) -> str | None:
    if prompt.meta.get("verifier"):
        return str(prompt.meta["verifier"])
    if prompt.world in WORLDS:
        return f"world:{prompt.world}"
    return "reference-match" if prompt.reference is not None else None


def verify_one(prompt: Prompt, completion: str) -> tuple[str | None, Verdict | None]:
    name = verifier_name(prompt)
    if name is None:
        return None, None
    return name, get_verifier(name)(prompt, completion)


def verify(rollouts: pa.Table, prompts: dict[str, Prompt], workers: int = 4) -> pa.Table:
    """`rollouts` with reward/verdict/verifier/verify_detail filled in."""
    pids = rollouts.column("prompt_id").to_pylist()
    texts = rollouts.column("completion").to_pylist()
    for name in {verifier_name(prompts[pid]) for pid in set(pids)} - {None}:
        get_verifier(name)  # an unknown name fails here, before any rollout is checked
    # code verification waits on subprocesses: a few threads keep both cores busy
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda a: verify_one(prompts[a[0]], a[1]), zip(pids, texts)))
    names = [name for name, _ in results]
    rewards = [v.reward if v else None for _, v in results]
    verdicts = [v.verdict if v else "unverified" for _, v in results]
    details = [json.dumps(v.detail, sort_keys=True, default=str) if v else None for _, v in results]
    for col, values, typ in (
        ("reward", rewards, pa.float32()),
        ("verdict", verdicts, pa.string()),
        ("verifier", names, pa.string()),
        ("verify_detail", details, pa.string()),
    ):
        rollouts = rollouts.set_column(rollouts.schema.get_field_index(col), col, pa.array(values, typ))
    return rollouts


def verify_and_commit(lake, run_id: str, shard: str, generated: str) -> dict:
    """Verify a generated shard and commit it: `tokens` first, then `rollouts`.

    A rollout row is the proof its tokens are in: a crash between the two commits
    leaves tokens without a rollout, which the re-run's commit completes. Returns the rows
    the shard holds and, as `added`, the rollouts this commit added (rows already in the lake — the
same work done before — are not new).
    """
    from tokenmill.tasks.prompts import read_shard

    prompts = {p.prompt_id: p for p in read_shard(lake, shard)}
    rollouts = verify(_read_generated(lake, f"{generated}/rollouts.parquet"), prompts)
    tokens = _read_generated(lake, f"{generated}/tokens.parquet")
    lake.commit("tokens", run_id, tokens)
    added = lake.commit("rollouts", run_id, rollouts)
    return {"rollouts": rollouts.num_rows, "tokens": tokens.num_rows, "added": added.rows_written}


def _read_generated(lake, rel: str) -> pa.Table:
    """A generated staging file; one that is missing or unreadable is a LakeError saying how to
    get it back (generation redoes a shard whose staging files are not both there)."""
    from tokenmill.errors import LakeError

    if not lake.exists(f"_staging/{rel}"):
        raise LakeError("generated staging file is missing (removed after generation?)", where=lake.scratch_path(rel),
                        fix="re-run the same command: the shard is generated again")
    try:
        return lake.read_scratch(rel)
    except (pa.ArrowException, OSError) as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LakeError(f"cannot read this staging file ({detail})", where=lake.scratch_path(rel),
                        fix="delete it and re-run the same command: the shard is generated again") from None
