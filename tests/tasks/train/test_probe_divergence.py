"""A diverging probe (issue 18: no NaN may reach a lake table): refused with nothing
stored, instead of a NaN `final_loss` in `model_artifacts`."""

import shutil

import pytest

from tokenmill.errors import TokenmillError
from tokenmill.storage.lake import Lake
from tokenmill.tasks.train.probe import train_probe


def test_a_non_finite_probe_loss_stores_no_probe(bios_lake, tmp_path):
    dest = tmp_path / "lake"
    shutil.copytree(bios_lake, dest)
    lake = Lake(str(dest))
    with pytest.raises(TokenmillError, match=r"probe: loss is nan .*lower the learning rate"):
        train_probe(lake, "b", "tiny-small", steps=20, lr=1e30)
    assert not lake.files("model_artifacts", "b") and not lake.files("probe_eval", "b")
