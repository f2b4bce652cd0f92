"""Bad input, system-wide: the cases of docs/BAD_INPUT.md not tested elsewhere.

Real parts only: the bundled tiny models (and copies of tiny-small with corrupted weights,
another tokenizer or other settings), real Parquet lakes, real DuckDB, the real `tokenmill`
command. Each case ends in a clear error (naming the record, rollout, file or model, and
the fix) or a recorded outcome — never a traceback, a silent drop, or a NaN in a table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import make_run

from tokenmill.config import RewardsConfig, RolloutConfig, RoutingConfig, SourceConfig
from tokenmill.engines import SamplingParams
from tokenmill.errors import EngineError, LakeError, SourceError, TokenmillError
from tokenmill.models.registry import resolve_model
from tokenmill.sources.files import open_source
from tokenmill.storage.lake import Lake
from tokenmill.tasks import generate, verify
from tokenmill.tasks import prompts as prompt_stage
from tokenmill.tasks import score as score_stage
from tokenmill.labelers.rewards.labeler import RewardsLabeler

CONTEXT = 256  # max_position_embeddings of the tiny models


def variant(tmp_path, name: str, weights=None, generation: dict | None = None, config: dict | None = None,
            extra_token: bool = False) -> str:
    """A copy of tiny-small with its weights changed in place (`weights(tensors)`), settings
    merged into its generation config or config, or one token added to its tokenizer."""
    src = resolve_model("tiny-small").path
    dst = tmp_path / name
    shutil.copytree(src, dst)
    if weights:
        from safetensors.torch import load_file, save_file

        tensors = load_file(dst / "model.safetensors")
        weights(tensors)
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    for file, extra in (("generation_config.json", generation), ("config.json", config)):
        if extra:
            (dst / file).write_text(json.dumps({**json.loads((dst / file).read_text()), **extra}))
    if extra_token:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src)
        tok.add_tokens(["<extra>"])
        tok.save_pretrained(dst)
    return str(dst)


def eos_logit(sign: int):
    """Weights under which EOS is always the most (sign +1) or least (−1) likely next token.
    Only dimension 0 survives the final norm and every embedding holds 100 there, so every
    logit is h0 · 100 with h0 > 0, except EOS's, which is h0 · (100 + 100 · sign)."""
    def edit(tensors) -> None:
        tensors["model.norm.weight"].zero_()
        tensors["model.norm.weight"][0] = 1.0
        tensors["model.embed_tokens.weight"][:, 0] = 100.0
        tensors["model.embed_tokens.weight"][2, 0] = 100.0 + 100.0 * sign
    return edit


def nan_weights(tensors) -> None:
    tensors["model.norm.weight"].fill_(float("nan"))


def long_prompts(tmp_path, *words: int) -> str:
    """A JSONL source with one arithmetic-looking prompt of about 6·n tokens per n given."""
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"prompt": "Compute step by step: " + "1+1=2 " * n}) + "\n" for n in words))
    return str(path)


def clobber_footer(path: str) -> None:
    with open(path, "r+b") as fh:  # what a truncated or half-copied file looks like to a reader
        fh.seek(-12, 2)
        fh.write(b"\0" * 12)


def stage_run(lake: Lake, run_id: str, sources: list[SourceConfig], model: str, params: SamplingParams) -> list[str]:
    """Prompts, generation and verification of one run through the plain stage functions."""
    shards = prompt_stage.load_and_shard(lake, run_id, sources, 64)
    for shard in shards:
        verify.verify_and_commit(lake, run_id, shard, generate.generate_shard(lake, run_id, shard, "hf", model, params))
    return shards


# ------------------------------------------------------------------ sources


def test_text_that_is_not_valid_utf8_is_refused_naming_the_record(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    surrogate = tmp_path / "s.jsonl"  # valid JSON, but "\ud800" alone is no Unicode character
    surrogate.write_text('{"prompt": "ok"}\n{"prompt": "a\\ud800b"}\n')
    with pytest.raises(SourceError, match=r"s\.jsonl:2: field 'prompt' is not valid Unicode: a lone surrogate"):
        open_source(surrogate).load()
    binary = tmp_path / "b.parquet"
    pq.write_table(pa.table({"prompt": pa.array([b"\xff\xfe"], pa.binary())}), binary)
    with pytest.raises(SourceError, match=r"b\.parquet:row 0: field 'prompt' is binary data"):
        open_source(binary).load()
    name = os.fsdecode(bytes(tmp_path) + b"/\xff.jsonl")  # a file name that is not UTF-8
    with open(name, "w") as fh:
        fh.write('{"prompt": "x"}\n')
    with pytest.raises(SourceError, match="not valid UTF-8") as e:
        open_source(name).load()
    assert "rename" in e.value.fix


# ------------------------------------------------------------------ generations


def test_a_model_that_stops_at_once_gives_empty_completions_that_are_verified_and_labelled(tmp_path):
    stops = variant(tmp_path, "stops", weights=eos_logit(+1))  # EOS first, always
    lake = Lake(tmp_path / "lake")
    make_run(lake.uri, models=(stops,), n_prompts=2, samples=2, max_tokens=8)
    r = lake.read("rollouts", "r1").to_pylist()
    assert {(x["completion"], x["num_tokens"], x["finish_reason"], x["verdict"], x["reward"]) for x in r} == \
        {("", 1, "stop", "invalid", 0.0)}
    written = RewardsLabeler(RewardsConfig(kinds=["grpo", "tempo", "d3s", "entropy"])).label_shard(
        lake, "r1", lake.files("rollouts", "r1")[0])
    assert written == {k: 4 for k in ("grpo", "tempo", "d3s", "entropy")}
    assert np.isfinite(lake.read("token_rewards", "r1").column("value").to_numpy(zero_copy_only=False)).all()


def test_rollouts_without_completion_tokens_are_kept_scored_labelled_and_curated(tmp_path, hf_small):
    from tokenmill import datasets as D
    from tokenmill.curation.curate import run_recipe

    lake = Lake(tmp_path / "lake")
    params = SamplingParams(n=2, max_tokens=6, seed=1)
    shard = prompt_stage.load_and_shard(lake, "r", [SourceConfig(world="arithmetic", n=3, seed=1)], 64)[0]
    prompts = prompt_stage.read_shard(lake, shard)
    gens = hf_small.generate([p.prompt for p in prompts], params)
    for g in gens[:2]:  # what an engine returns for a completion with no tokens at all
        g.token_ids, g.logprobs, g.entropy = g.token_ids[:0], g.logprobs[:0], g.entropy[:0]
        g.topk_ids, g.topk_logprobs = g.topk_ids[:0], g.topk_logprobs[:0]
    rollouts, tokens = generate.rollout_tables(prompts, gens, hf_small, params)
    out = generate.generated_dir("r", shard, "hf", "tiny-small", params)
    lake.write_scratch(f"{out}/tokens.parquet", tokens)
    lake.write_scratch(f"{out}/rollouts.parquet", rollouts)
    verify.verify_and_commit(lake, "r", shard, out)
    n_tokens = tokens.num_rows
    assert lake.read("rollouts", "r").num_rows == 6 and sorted(lake.read("rollouts", "r").column("num_tokens").to_pylist())[:3] == [0, 0, 6]

    part = lake.files("rollouts", "r")[0]
    assert score_stage.score_shard(lake, "r", part, {"policy": "policy", "ref": "tiny-large"}) == \
        {"policy": n_tokens, "ref": n_tokens}
    labeler = RewardsLabeler(models={"ref": "tiny-large"})  # every kind, dpo and rlpr included
    assert set(labeler.label_shard(lake, "r", part).values()) == {n_tokens}
    _, _, rows = run_recipe(lake, "weighted-sft", ["r"], {"where": "true"})
    table = D.build("sequences", rows)
    assert table.num_rows == 6  # the empty ones are kept, with nothing to weight
    assert sorted(len(w) - len(p) for w, p in zip(table.column("weights").to_pylist(), rows.column("prompt_token_ids").to_pylist()))[:2] == [0, 0]


def test_greedy_decoding_with_several_samples_gives_identical_samples(tmp_path):
    lake = Lake(tmp_path / "lake")
    make_run(lake.uri, n_prompts=2, samples=3, max_tokens=8, temperature=0.0)
    r = lake.read("rollouts", "r1")
    assert r.num_rows == 6 and len(set(r.column("rollout_id").to_pylist())) == 6
    by_prompt = {}
    for pid, ids_ in zip(r.column("prompt_id").to_pylist(), r.column("completion_token_ids").to_pylist()):
        by_prompt.setdefault(pid, set()).add(tuple(ids_))
    assert len(by_prompt) == 2 and all(len(v) == 1 for v in by_prompt.values())


# ------------------------------------------------------------------ NaN / inf


def test_nan_logprobs_fail_generation_naming_the_model(tmp_path):
    broken = variant(tmp_path, "nan-model", weights=nan_weights)
    lake = Lake(tmp_path / "lake")
    shard = prompt_stage.load_and_shard(lake, "r", [SourceConfig(world="arithmetic", n=2, seed=1)], 64)[0]
    # sampled or greedy, the NaN logprobs are caught before anything is written
    for temperature, needle in ((1.0, "non-finite log-probabilities"), (0.0, "non-finite log-probabilities")):
        with pytest.raises(EngineError, match=needle) as e:
            generate.generate_shard(lake, "r", shard, "hf", broken, SamplingParams(n=1, temperature=temperature,
                                                                                  max_tokens=4))
        assert broken in str(e.value) and "dtype=float32" in e.value.fix
    assert not lake.files("rollouts") and not lake.files("tokens") and not lake.exists("_staging/runs/r/generated")


def test_nan_logprobs_fail_scoring_naming_the_model_and_the_rollout(tmp_path, copy_lake):
    broken = variant(tmp_path, "nan-model", weights=nan_weights)
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    with pytest.raises(EngineError, match=r"rollout [0-9a-f]{16}: model .*nan-model.* \(role 'ref'\) gave non-finite"):
        score_stage.score_shard(lake, "r1", shard, {"ref": broken})
    with pytest.raises(EngineError, match="non-finite"):
        RewardsLabeler(RewardsConfig(kinds=["dpo"]), models={"ref": broken}).label_shard(lake, "r1", shard)
    assert "ref" not in lake.read("scores", "r1", columns=["model"]).column("model").to_pylist()  # policy's are sound
    assert not lake.files("token_rewards")


def test_nan_contrast_models_fail_critical_labels_naming_them(tmp_path, copy_lake):
    from tokenmill.labelers.critical.labeler import CriticalLabeler

    broken = variant(tmp_path, "nan-model", weights=nan_weights)  # as a diverged fine-tuning would leave them
    lake = Lake(copy_lake)
    labeler = CriticalLabeler()
    source = lake.read("rollouts", "r1", columns=["source"]).column("source")[0].as_py()
    labeler.models = {("tiny-small", source): {"pos": broken, "neg": broken}}
    with pytest.raises(TokenmillError, match=r"rollout [0-9a-f]{16}: critical: p_CE is NaN/inf .*contrast models") as e:
        labeler.label_shard(lake, "r1", lake.files("rollouts", "r1")[0])
    assert "train_lr" in e.value.fix and not lake.files("critical")


# ------------------------------------------------------------------ context overflow


def test_a_prompt_longer_than_the_context_is_refused_before_any_write(tmp_path, hf_small):
    source = long_prompts(tmp_path, 2, 200)  # line 2: ~1200 tokens for a 256-token model
    cfg = RolloutConfig(lake=str(tmp_path / "lake"), sources=[SourceConfig(path=source)], models=["tiny-small"])
    with pytest.raises(EngineError, match=r"source 'long', record 2 .*1207 tokens.*context of tiny-small \(256 tokens\)"):
        prompt_stage.preflight(cfg)
    with pytest.raises(EngineError, match="record 2"):  # what the rollouts flow runs, given the run's models
        prompt_stage.load_and_shard(Lake(cfg.lake), "r", cfg.sources, 64, models=cfg.models)
    assert not (tmp_path / "lake").exists()
    prompts = open_source(source).load()  # the generate stage refuses it too (API callers skip preflight)
    with pytest.raises(EngineError, match="record 2"):
        generate.generate(prompts, hf_small, SamplingParams(max_tokens=4))
    # the engine itself (continuations of a full context, as critical_truth asks) gives an empty completion
    full, short = hf_small.generate([[1] * CONTEXT, [1] * 10], SamplingParams(max_tokens=4))
    assert (len(full.token_ids), full.finish_reason) == (0, "length") and len(short.token_ids) > 0


def test_prompt_and_completion_beyond_the_context_are_cut_at_the_context(tmp_path):
    lake = Lake(tmp_path / "lake")
    stage_run(lake, "r", [SourceConfig(path=long_prompts(tmp_path, 40, 1))], "tiny-small",
              SamplingParams(n=2, max_tokens=64, seed=1))
    r = lake.read("rollouts", "r")
    total = pc.add(pc.list_value_length(r.column("prompt_token_ids")), r.column("num_tokens")).to_pylist()
    lengths = r.column("num_tokens").to_pylist()
    assert max(total) == CONTEXT and min(lengths) < 64 < max(total)  # the long prompt is cut, the short one is not
    for t, n, reason in zip(total, lengths, r.column("finish_reason").to_pylist()):
        assert t <= CONTEXT and (reason == "length") == (n == 64 or t == CONTEXT)
    assert score_stage.score_shard(lake, "r", lake.files("rollouts", "r")[0], {"policy": "policy"})["policy"] == sum(lengths)


def test_scoring_a_rollout_longer_than_a_models_context_names_the_rollout(tmp_path):
    # a policy with a longer context (RoPE runs past 256) that never stops early
    long_ctx = variant(tmp_path, "long-context", config={"max_position_embeddings": 512}, weights=eos_logit(-1))
    lake = Lake(tmp_path / "lake")
    stage_run(lake, "r", [SourceConfig(path=long_prompts(tmp_path, 40))], long_ctx, SamplingParams(n=1, max_tokens=40))
    r = lake.read("rollouts", "r")
    assert len(r.column("prompt_token_ids")[0]) + r.column("num_tokens")[0].as_py() == 247 + 40 > CONTEXT
    shard = lake.files("rollouts", "r")[0]
    with pytest.raises(EngineError, match=r"rollout [0-9a-f]{16}: rollout has \d+ tokens .*more than the 256 of "
                                          r"'tiny-small' \(role 'ref'\)"):
        score_stage.score_shard(lake, "r", shard, {"ref": "tiny-small"})
    assert not lake.files("scores")


# ------------------------------------------------------------------ tokenizer mismatch


def test_scoring_with_a_model_of_another_tokenizer_is_refused(tmp_path, copy_lake):
    other = variant(tmp_path, "other-tokenizer", extra_token=True)
    lake = Lake(copy_lake)
    with pytest.raises(EngineError, match="role 'ref': .*other-tokenizer has a different tokenizer from tiny-small") as e:
        score_stage.score_shard(lake, "r1", lake.files("rollouts", "r1")[0], {"policy": "policy", "ref": other})
    assert "--model ref=tiny-small" in e.value.fix
    with pytest.raises(EngineError, match="different tokenizer"):  # the label flow's prepare step, before any scoring
        RewardsLabeler(RewardsConfig(kinds=["dpo"]), models={"ref": other}).prepare(lake, "r1")
    assert not lake.files("scores")


# ------------------------------------------------------------------ the lake


def test_a_corrupted_rollouts_file_read_by_a_stage_names_it(copy_lake):
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    clobber_footer(shard)
    for stage in (lambda: score_stage.score_shard(lake, "r1", shard, {"policy": "policy"}),
                  lambda: RewardsLabeler(RewardsConfig(kinds=["grpo"])).label_shard(lake, "r1", shard)):
        with pytest.raises(LakeError, match="cannot read this lake file") as e:
            stage()
        assert e.value.where == shard and f"tokenmill check --deep --lake {lake.uri}" in e.value.fix


def test_a_corrupted_file_fails_sql_and_curation_naming_it(copy_lake):
    from tokenmill.storage.catalog import run_query
    from tokenmill.curation.curate import run_recipe

    lake = Lake(copy_lake)
    bad = lake.files("tokens", "r1")[0]
    clobber_footer(bad)
    for query in (lambda: run_query(lake, "SELECT count(*) FROM prompts"),
                  lambda: run_recipe(lake, "weighted-sft", ["r1"])):
        with pytest.raises(LakeError, match="table tokens: a lake file cannot be read") as e:
            query()
        assert bad in str(e.value) and "tokenmill check" in e.value.fix


def test_a_lake_file_removed_after_listing_is_a_clear_error(copy_lake):
    lake = Lake(copy_lake)
    shard = lake.files("rollouts", "r1")[0]
    os.remove(shard)
    with pytest.raises(LakeError, match="disappeared while it was being read") as e:
        RewardsLabeler(RewardsConfig(kinds=["grpo"])).label_shard(lake, "r1", shard)
    assert e.value.where == shard


def test_a_missing_staging_file_is_regenerated_by_a_rerun(tmp_path):
    lake = Lake(tmp_path / "lake")
    params = SamplingParams(n=1, max_tokens=4)
    shard = prompt_stage.load_and_shard(lake, "r", [SourceConfig(world="arithmetic", n=2, seed=1)], 64)[0]
    out = generate.generate_shard(lake, "r", shard, "hf", "tiny-small", params)
    os.remove(lake.scratch_path(f"{out}/tokens.parquet"))
    with pytest.raises(LakeError, match="generated staging file is missing") as e:
        verify.verify_and_commit(lake, "r", shard, out)
    assert "re-run" in e.value.fix and not lake.files("rollouts")
    assert generate.generate_shard(lake, "r", shard, "hf", "tiny-small", params) == out  # the re-run regenerates it
    assert verify.verify_and_commit(lake, "r", shard, out) == {"rollouts": 2, "tokens": 8, "added": 2}


def test_a_wrong_lake_uri_is_refused_before_any_write(tmp_path):
    with pytest.raises(LakeError, match="unsupported lake URI") as e:
        prompt_stage.check_run(RolloutConfig(lake="nosuchfs://bucket/lake"))
    assert "s3://" in e.value.fix
    (tmp_path / "file").write_text("not a lake")
    with pytest.raises(LakeError, match="lake root is a file"):
        Lake(f"file://{tmp_path / 'file'}")


def test_a_lake_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a lake")
    with pytest.raises(LakeError, match="lake root is a file"):
        Lake(tmp_path / "file")


# ------------------------------------------------------------------ labelling prerequisites


def test_outcome_routing_on_prompts_without_answers_is_refused_before_any_work(tmp_path):
    from tokenmill.labelers.routing.labeler import RoutingLabeler

    source = tmp_path / "free.jsonl"
    source.write_text(json.dumps({"prompt": "Tell me about 3+4."}) + "\n")
    lake = Lake(tmp_path / "lake")
    stage_run(lake, "r", [SourceConfig(path=str(source))], "tiny-large", SamplingParams(n=1, max_tokens=4))
    with pytest.raises(TokenmillError, match="outcome verifier needs prompts with exact answers; source 'free', "
                                             "record 1") as e:
        RoutingLabeler(RoutingConfig(verifier="outcome")).prepare(lake, "r")
    assert "--routing-verifier judge" in e.value.fix


def test_a_span_verdict_line_that_is_not_json_names_file_and_line(tmp_path):
    from tokenmill.labelers.hallucination.annotators import FileAnnotator

    path = tmp_path / "verdicts.jsonl"
    path.write_text('{"rollout_id": "r1", "span": "x", "label": "Supported", "index": 0}\nnot json\n')
    with pytest.raises(TokenmillError, match=r"verdicts\.jsonl:2") as e:
        FileAnnotator(path)
    assert "rollout_id" in e.value.fix


def test_a_probe_on_too_few_prompts_to_hold_some_out_says_to_label_more(tmp_path):
    from tokenmill.labelers.hallucination.labeler import HallucinationLabeler
    from tokenmill.tasks.train.probe import train_probe

    lake = Lake(tmp_path / "lake")
    make_run(lake.uri, n_prompts=1, samples=2, max_tokens=60, world="bios", split="all")
    HallucinationLabeler().label_shard(lake, "r1", lake.files("rollouts", "r1")[0])
    with pytest.raises(TokenmillError, match="cannot be split into train and held-out prompts") as e:
        train_probe(lake, "r1", "tiny-small", steps=1)
    assert "more prompts" in e.value.fix


def test_router_training_on_a_run_without_routing_labels_says_to_label_first(arith_lake):
    from tokenmill.tasks.train.router import load_training_data

    with pytest.raises(TokenmillError, match="no routing labels") as e:
        load_training_data(Lake(arith_lake), "r1")
    assert "--labelers routing" in e.value.fix


# ------------------------------------------------------------------ tokenmill sql


REFUSED_SQL = [
    ("INSERT INTO tokens SELECT * FROM tokens", "read-only: INSERT"),
    ("UPDATE tokens SET pos = 0", "read-only: UPDATE"),
    ("DELETE FROM tokens", "read-only: DELETE"),
    ("CREATE TABLE x AS SELECT 1", "read-only: CREATE"),
    ("COPY (SELECT 1) TO '{lake}/x.csv'", "read-only: COPY"),
    ("ATTACH '{lake}/x.duckdb' AS x", "read-only: ATTACH"),
    ("DETACH x", "read-only: DETACH"),
    ("INSTALL httpfs", "read-only: INSTALL"),
    ("LOAD json", "read-only: LOAD"),
    ("SET enable_external_access = true", "read-only: SET"),
    ("PRAGMA version", "read-only: PRAGMA"),
    ("EXPORT DATABASE '{lake}/dump'", "read-only: EXPORT"),
    ("SELECT 1; DROP VIEW tokens", "exactly one statement"),
    ("SELECT * FROM read_csv('/etc/passwd')", "reads only the lake's tables: Permission Error: Cannot access file \"/etc/passwd\""),
    ("SELECT * FROM read_text('/etc/hostname')", "reads only the lake's tables"),
    ("SELECT * FROM glob('/etc/*')", "reads only the lake's tables"),
]


def test_tokenmill_sql_refuses_writes_attaches_and_files_outside_the_lake(arith_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(arith_lake, lake)
    before = sorted(str(p) for p in lake.rglob("*"))
    # each statement through the command's own entry point, in one process (one import)
    script = (
        "import contextlib, io, json, sys\n"
        "from tokenmill.cli import main\n"
        "out, queries, lake = [], json.loads(sys.argv[1]), sys.argv[2]\n"
        "for q in queries:\n"
        "    sys.argv = ['tokenmill', 'sql', q, '--lake', lake, '-f', 'csv']\n"
        "    err, std = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):\n"
        "        try:\n"
        "            main(); rc = 0\n"
        "        except SystemExit as e:\n"
        "            rc = e.code\n"
        "    out.append([rc, err.getvalue(), std.getvalue()])\n"
        "print(json.dumps(out))\n"
    )
    queries = [q.format(lake=lake) for q, _ in REFUSED_SQL] + ["SELECT count(*) AS n FROM rollouts"]
    r = subprocess.run([sys.executable, "-c", script, json.dumps(queries), str(lake)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.splitlines()[-1])
    for (q, needle), (rc, err, _) in zip(REFUSED_SQL, results):
        message = " ".join(err.split())
        assert rc == 2 and message.startswith("error:") and "Traceback" not in err, (q, err)
        assert needle in message, (q, message)
    assert results[-1][0] == 0 and results[-1][2].split() == ['"n"', "32"]
    assert sorted(str(p) for p in lake.rglob("*")) == before
