"""Model tasks' tag: `model` (one API round trip per task for a slot) only where a limit on it exists."""

from __future__ import annotations

from tokenmill.config import RunnerConfig
from tokenmill.flows.label import label_shard
from tokenmill.flows.rollouts import generate_shard
from tokenmill.flows.runners import MODEL_TAG, model_tags, timed
from tokenmill.flows.train import evaluate_task, train_weighted_task


def test_model_tasks_take_the_model_tag_only_while_the_server_limits_it(prefect_harness):
    from prefect.client.orchestration import get_client

    tasks = (generate_shard, label_shard, train_weighted_task, evaluate_task)
    assert model_tags() == []
    assert all(timed(t, RunnerConfig(), 1000).tags == set() for t in tasks)
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=MODEL_TAG, concurrency_limit=2)
        try:
            assert model_tags() == [MODEL_TAG]
            assert all(timed(t, RunnerConfig(), 1000).tags == {MODEL_TAG} for t in tasks)
        finally:
            client.delete_concurrency_limit_by_tag(MODEL_TAG)
    assert model_tags() == []
