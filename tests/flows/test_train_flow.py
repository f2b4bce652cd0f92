import shutil

import pyarrow.compute as pc

from tokenmill.config import RouterConfig
from tokenmill.flows.train import router_flow
from tokenmill.storage.lake import Lake


def test_router_trained_on_routing_labels_beats_random_routing_at_equal_share(prefect_harness, route_lake, tmp_path):
    lake_dir = tmp_path / "lake"
    shutil.copytree(route_lake, lake_dir)
    cfg = RouterConfig(lake=str(lake_dir), run_id="g", steps=300, eval_prompts=64, thresholds=[])
    out = router_flow(cfg)
    router = out["router"]
    assert router["val"]["recall"] >= 0.95 and 0 < router["val"]["positive_rate"] < 0.5
    ev = {e["policy"]: e for e in out["eval"]}
    assert ev["small-only"]["large_share"] == 0 and ev["large-only"]["large_share"] == 1
    assert ev["router"]["large_share"] < 0.5
    assert abs(ev["random"]["large_share"] - ev["router"]["large_share"]) < 0.05
    assert ev["router"]["accuracy"] > ev["random"]["accuracy"] + 0.1
    assert ev["large-only"]["accuracy"] > ev["small-only"]["accuracy"]
    lake = Lake(str(lake_dir))
    assert lake.read("routing_eval", "g").num_rows == len(out["eval"])
    arts = lake.read("model_artifacts", "g", filter=pc.field("role") == "router")
    assert arts.column("artifact_id").to_pylist() == [router["artifact_id"]]
    # a second run reuses the stored router and its evaluation collapses onto the first
    again = router_flow(cfg)
    assert again["router"]["artifact_id"] == router["artifact_id"]
    assert lake.read("model_artifacts", "g", filter=pc.field("role") == "router").num_rows == 1
    assert lake.read("routing_eval", "g").num_rows == len(out["eval"])
