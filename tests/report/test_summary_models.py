"""The label summary with long model paths (issue 18): two `ref = <model>` rows must not
look the same because their paths were cut at the console's width."""

import io
import shutil

from rich.console import Console

from tokenmill.models.registry import resolve_model
from tokenmill.report.summary import label_summary, render_table
from tokenmill.storage.lake import Lake
from tokenmill.labelers.rewards.labeler import RewardsConfig, RewardsLabeler


def _cells(text: str, column: int) -> list[str]:
    """Each body row's text in `column` of a rendered rich table, wrapped lines joined
    (without the spaces a wrap ate)."""
    rows = []
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) < column + 2:
            continue  # borders, title
        first, cell = cells[1].strip(), cells[column + 1].strip()
        if first:
            rows.append(cell)
        elif rows:
            rows[-1] += cell
    return [r.replace(" ", "") for r in rows]


def test_two_long_model_paths_stay_apart_in_a_narrow_console(copy_lake, tmp_path):
    lake = Lake(str(copy_lake))
    models = []
    for step in ("step-001000", "step-002000"):  # same long prefix, different tails
        path = tmp_path / "checkpoints" / "policy-sft-with-a-rather-long-experiment-name" / step
        shutil.copytree(resolve_model("tiny-small").path, path)
        models.append(str(path))
        labeler = RewardsLabeler(RewardsConfig(kinds=["dpo"]), models={"ref": str(path)})
        for shard in lake.files("rollouts", "r1"):
            labeler.label_shard(lake, "r1", shard)
    table = label_summary(lake, "r1")
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render_table(table, title="labels"))
    outputs = _cells(console.export_text(), 1)
    assert [o for o in outputs if o.startswith("ref=")] == [f"ref={m}" for m in models]
