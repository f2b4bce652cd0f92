"""Training a base model whose tokenizer is not the dataset's (issue 18): refused up front,
in one line naming both, instead of an IndexError deep in the embedding."""

import json
import subprocess
import sys

import pyarrow.compute as pc
import pytest

from tokenmill import datasets as D
from tokenmill.errors import TokenmillError
from tokenmill.curation.curate import run_recipe
from tokenmill.tasks.train.weighted import train_weighted


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny Llama with its own, smaller BPE tokenizer (trained on a sliver of the worlds),
    saved like a user's local model directory; one training step, so it loads and runs."""
    from tokenmill.models.builder import SPECS, corpus, encode_pairs, save_tokenizer, train_model

    out = tmp_path_factory.mktemp("other") / "other-tokenizer-model"
    pairs = corpus(scale=0.002)
    tok = save_tokenizer(pairs, out, vocab_size=264)
    model, _ = train_model(SPECS["tiny-small"], tok, {w: encode_pairs(tok, rows) for w, rows in pairs.items()}, steps=1)
    model.save_pretrained(out)
    return str(out)


def _sft_dataset(lake):
    r, p, rows = run_recipe(lake, "weighted-sft", ["r1"], {"weight": "coalesce(critical_weight, 1.0)", "where": "true"})
    return D.write(lake, D.build(r.kind, rows), recipe=r.name, kind=r.kind, params=p, runs=["r1"])


def test_the_manifest_records_the_models_that_generated_the_dataset(labelled):
    assert _sft_dataset(labelled)["models"] == ["tiny-small"]


def test_a_base_model_with_another_tokenizer_is_refused_before_training(labelled, other_tokenizer_model):
    ds = _sft_dataset(labelled)["dataset_id"]
    with pytest.raises(TokenmillError) as e:
        train_weighted(labelled, ds, other_tokenizer_model, "sft", steps=2, batch=2)
    msg = str(e.value)
    assert other_tokenizer_model in msg and "tiny-small" in msg and "tokenizer" in msg and "vocabularies differ" in msg
    assert "--model tiny-small" in msg  # the fix
    assert not labelled.files("model_artifacts", "r1") and not labelled.files("train_metrics", "r1")
    # the same tokenizer in another model (tiny-large) trains
    assert train_weighted(labelled, ds, "tiny-large", "sft", steps=1, batch=2)["tokens"] > 0


def test_a_dataset_without_models_in_its_manifest_is_checked_against_its_rollouts(labelled, other_tokenizer_model):
    m = _sft_dataset(labelled)
    path = D.local_path(labelled, m["dataset_id"]) / "manifest.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "models"}  # as curated before manifests had it
    path.write_text(json.dumps(old))
    with pytest.raises(TokenmillError, match="tiny-small"):
        train_weighted(labelled, m["dataset_id"], other_tokenizer_model, "sft", steps=1, batch=2)


def test_the_cli_says_it_in_one_line_with_exit_code_2(labelled, other_tokenizer_model):
    ds = _sft_dataset(labelled)["dataset_id"]
    code = ("import sys; sys.argv = ['tokenmill', 'train', '--lake', sys.argv[1], '--dataset', sys.argv[2], '--model', "
            "sys.argv[3], '--steps', '1']; from tokenmill.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code, labelled.uri, ds, other_tokenizer_model], capture_output=True,
                         text=True, timeout=300, env={"COLUMNS": "400", **__import__("os").environ})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("error:") and other_tokenizer_model in lines[0] and "tiny-small" in lines[0]


def test_a_generating_model_gone_from_here_still_gets_its_token_ids_checked(labelled, other_tokenizer_model, tmp_path):
    m = _sft_dataset(labelled)
    path = D.local_path(labelled, m["dataset_id"]) / "manifest.json"
    path.write_text(json.dumps({**m, "models": [str(tmp_path / "deleted-model")]}))
    with pytest.raises(TokenmillError, match=r"deleted-model.*token ids up to \d+, vocabulary of 264"):
        train_weighted(labelled, m["dataset_id"], other_tokenizer_model, "sft", steps=1, batch=2)
