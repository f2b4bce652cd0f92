"""A shard whose completions hold no entity span (issue 18): nothing to write, shard done."""

import pyarrow as pa

from tokenmill.config import HallucinationConfig
from tokenmill.schema import HALLUCINATION_SPANS
from tokenmill.storage.lake import Lake
from tokenmill.labelers.base import config_id, is_done
from tokenmill.labelers.hallucination.labeler import HallucinationLabeler


def test_a_shard_without_spans_writes_nothing_and_is_marked_done(copy_lake):
    lake = Lake(str(copy_lake))
    # the knowledge base's sentence patterns find nothing in arithmetic completions
    labeler = HallucinationLabeler(HallucinationConfig(extractors=["kb"]))
    shards = lake.files("rollouts", "r1")
    assert [labeler.label_shard(lake, "r1", s) for s in shards] == [{"hallucination_spans": 0}] * len(shards)
    cid = config_id(labeler.name, labeler.version, {}, labeler.params())
    assert all(is_done(lake, "r1", cid, s) for s in shards)
    assert not lake.files("hallucination_spans", "r1")


def test_no_spans_give_an_empty_table_of_the_spans_schema(arith_lake):
    lake = Lake(str(arith_lake))
    rollouts = lake.read("rollouts", "r1", columns=["rollout_id", "model", "prompt_id", "completion"]).sort_by("rollout_id")
    tokens = lake.read("tokens", "r1").sort_by([("rollout_id", "ascending"), ("pos", "ascending")])
    table = HallucinationLabeler(HallucinationConfig(extractors=["titles"])).label(rollouts, tokens, {})
    assert table.num_rows == 0 and table.schema == HALLUCINATION_SPANS.schema
    # no rollouts at all: the same
    empty = HallucinationLabeler().label(rollouts.slice(0, 0), tokens.slice(0, 0), {})
    assert empty.num_rows == 0 and empty.schema == HALLUCINATION_SPANS.schema
    assert isinstance(empty, pa.Table)
