import numpy as np
import pytest

from tokenmill.errors import TokenmillError
from tokenmill.tasks.train.metrics import split_by_prompt
from tokenmill.tasks.train.router import recall_threshold


def test_threshold_is_the_lowest_positive_rate_with_the_recall():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 0, 1, 0, 1, 0])
    # all 3 positives needed (⌈0.95·3⌉ = 3): the third sits at 0.5, so 5 of 6 tokens fire
    assert recall_threshold(p, y, 0.95) == (0.5, 5 / 6, 1.0)
    # 2 needed: the second positive sits at 0.7
    assert recall_threshold(p, y, 0.6) == (pytest.approx(0.7), 0.5, pytest.approx(2 / 3))


def test_threshold_ties_fire_together():
    tau, rate, rec = recall_threshold(np.array([0.9, 0.5, 0.5, 0.1]), np.array([0, 1, 0, 1]), 0.5)
    assert (tau, rate, rec) == (0.5, 0.75, 0.5)


def test_threshold_needs_positives():
    with pytest.raises(TokenmillError, match="no divergent tokens"):
        recall_threshold(np.array([0.3, 0.2]), np.array([0, 0]), 0.95)


def test_validation_split_holds_whole_prompts_out():
    prompts = [f"p{i // 3}" for i in range(300)]  # 100 prompts, 3 tokens each
    val = split_by_prompt(prompts, 0.2, seed=0)
    by_prompt = {}
    for p, v in zip(prompts, val):
        by_prompt.setdefault(p, set()).add(bool(v))
    assert all(len(s) == 1 for s in by_prompt.values())
    assert 0.1 < val.mean() < 0.3
    assert (split_by_prompt(prompts, 0.2, seed=0) == val).all()


def test_training_data_of_a_run_with_two_routing_configs_asks_which_one(route_lake, tmp_path):
    import shutil

    import pyarrow as pa

    from tokenmill.storage.lake import Lake
    from tokenmill.tasks.train.router import load_training_data

    dest = tmp_path / "lake"
    shutil.copytree(route_lake, dest)
    lake = Lake(str(dest))
    routing = lake.read("routing", "g").drop_columns(["run_id"])
    first = routing.column("config_id")[0].as_py()
    before = load_training_data(lake, "g")
    i = routing.schema.get_field_index("config_id")
    lake.commit("routing", "g", routing.set_column(i, "config_id", pa.array(["judge-config"] * routing.num_rows)))

    with pytest.raises(TokenmillError, match=r"router: run 'g' has 2 routing configs .*judge-config") as e:
        load_training_data(lake, "g")
    assert "--config" in e.value.fix
    picked = load_training_data(lake, "g", first)  # one labelling, not both stacked
    assert len(picked["y"]) == len(before["y"]) and (picked["y"] == before["y"]).all()


def test_the_router_records_the_routing_config_it_was_trained_on(route_lake, tmp_path):
    import shutil

    from tokenmill.storage.catalog import connect
    from tokenmill.storage.lake import Lake
    from tokenmill.tasks.train.router import train_router

    dest = tmp_path / "lake"
    shutil.copytree(route_lake, dest)
    lake = Lake(str(dest))
    only = lake.read("routing", "g", columns=["config_id"]).column("config_id")[0].as_py()
    meta = train_router(lake, "g", steps=5)  # no --config: the run's only labelling
    assert meta["config_id"] == only
    (lineage,) = connect(lake).execute("SELECT lineage FROM model_artifacts WHERE role = 'router'").fetchone()
    import json

    assert json.loads(lineage)["routing_config"] == only


def test_r2r_recipe_takes_the_authors_settings_and_keeps_the_best_epoch(route_lake, tmp_path):
    import shutil

    from tokenmill.config import RouterConfig
    from tokenmill.storage.lake import Lake
    from tokenmill.tasks.train.router import load_router, train_router
    from tokenmill.tasks.train.router_config import R2R_ROUTER

    cfg = RouterConfig(run_id="g", recipe="r2r", lr=1e-3)
    assert (cfg.hidden, cfg.blocks, cfg.expansion, cfg.batch, cfg.epochs, cfg.patience, cfg.weight_decay) == (
        1024, 6, 4, 1024, 50, 10, 5e-4)
    assert cfg.lr == 1e-3  # a setting given wins over the recipe's
    assert RouterConfig.model_validate(cfg.model_dump()) == cfg  # what a flow re-reads is the same config
    assert RouterConfig(run_id="g").hidden == 256 and "hidden" in R2R_ROUTER
    dest = tmp_path / "lake"
    shutil.copytree(route_lake, dest)
    lake = Lake(str(dest))
    small = train_router(lake, "g", recipe="r2r", hidden=32, blocks=1, epochs=3, patience=1)
    assert small["dims"]["expansion"] == 4 and small["dims"]["hidden"] == 32
    assert 1 <= small["train"]["best_epoch"] <= 3 and small["train"]["epochs"] == 3
    plain = train_router(lake, "g", steps=5)
    assert "recipe" not in plain["train"] and plain["artifact_id"] != small["artifact_id"]  # earlier ids unchanged
    model, _ = load_router(lake, small["path"])
    assert model.dims["blocks"] == 1
