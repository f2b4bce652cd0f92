"""A diverging run (issue 18: no NaN may reach a lake table): refused at the step it
happens, with nothing stored, instead of a NaN `loss` in `train_metrics` and a NaN model."""

import pytest

from tokenmill import datasets as D
from tokenmill.errors import TokenmillError
from tokenmill.curation.curate import run_recipe
from tokenmill.tasks.train.weighted import train_weighted


def test_a_non_finite_loss_stops_training_and_stores_nothing(labelled):
    r, p, rows = run_recipe(labelled, "weighted-sft", ["r1"], {"weight": "1.0", "where": "true"})
    ds = D.write(labelled, D.build(r.kind, rows), recipe=r.name, kind=r.kind, params=p, runs=["r1"])["dataset_id"]
    with pytest.raises(TokenmillError, match=r"loss is nan at step \d+.*lower --lr"):
        train_weighted(labelled, ds, "tiny-small", "sft", steps=6, lr=1e30, batch=2, log_every=1)
    assert not labelled.files("train_metrics", "r1") and not labelled.files("model_artifacts", "r1")
