"""Bad input at the command line: one line, exit code 2, the lake unchanged — each row of
docs/BAD_INPUT.md's "options and targets" table, through the real `tokenmill` command."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOKENMILL = str(Path(sys.executable).with_name("tokenmill"))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: what "unchanged" means."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".commit.lock"}


def one_line_error(args: list[str], cwd: Path, needle: str) -> str:
    proc = subprocess.run([TOKENMILL, *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], lines
    return errors[0]


OUT_OF_RANGE = [
    (["--prompts", "0"], "--prompts 0: input should be greater than or equal to 1"),
    (["-n", "-1"], "-n/--samples -1: input should be greater than or equal to 1"),
    (["--top-p", "2"], "--top-p 2.0: input should be less than or equal to 1"),
    (["--temperature", "-1"], "--temperature -1.0: input should be greater than or equal to 0"),
    (["--max-tokens", "0"], "--max-tokens 0: input should be greater than or equal to 1"),
    (["--shard-size", "0"], "--shard-size 0: input should be greater than or equal to 1"),
    (["--run-id", "n-{foo}"], "the only placeholders are {date}, {datetime}"),
    (["label", "--beta", "-1"], "--beta -1.0: input should be greater than 0"),
    (["label", "--critical-beta", "-1"], "--critical-beta -1.0: input should be greater than or equal to 0"),
]


@pytest.mark.parametrize("opts,needle", OUT_OF_RANGE, ids=[" ".join(o[:2]) for o, _ in OUT_OF_RANGE])
def test_an_out_of_range_option_is_one_line_and_changes_no_lake(arith_lake, tmp_path, opts, needle):
    if opts[0] == "label":  # labels of an existing run: that lake stays as it was
        before = snapshot(arith_lake)
        one_line_error(["label", "--lake", str(arith_lake), "--run", "r1", *opts[1:]], tmp_path, needle)
        assert snapshot(arith_lake) == before
        return
    lake = tmp_path / "lake"
    one_line_error(["run", "--lake", str(lake), "--world", "arithmetic", *opts], tmp_path, needle)
    assert not lake.exists()


@pytest.mark.parametrize("target,needle", [
    ("missing/x.csv", "does not exist"),
    (".", "is a directory"),
    ("/dev/full", "No space left on device"),
    ("/proc/x.csv", "cannot write --out /proc/x.csv"),
    ("LAKE/rollouts/x.parquet", "is inside the lake"),
    ("LAKE/x.csv", "is inside the lake"),
], ids=["missing-dir", "directory", "dev-full", "unwritable", "table-folder", "lake-root"])
def test_sql_out_targets_are_checked(arith_lake, tmp_path, target, needle):
    before = snapshot(arith_lake)
    out = target.replace("LAKE", str(arith_lake))
    fmt = "parquet" if out.endswith(".parquet") else "csv"
    one_line_error(["sql", "--lake", str(arith_lake), "SELECT 1 AS a", "--format", fmt, "--out", out], tmp_path, needle)
    assert snapshot(arith_lake) == before


def test_sql_out_writes_atomically_where_it_may(arith_lake, tmp_path):
    out = tmp_path / "r.parquet"
    proc = subprocess.run([TOKENMILL, "sql", "--lake", str(arith_lake), "SELECT 1 AS a", "-f", "parquet", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and out.exists() and [p.name for p in tmp_path.iterdir()] == ["r.parquet"]


def test_a_lake_that_does_not_exist_is_an_error_not_an_empty_answer(tmp_path):
    for args in (["sql", "SELECT count(*) FROM rollouts"], ["view", "--out", str(tmp_path / "v.html")]):
        one_line_error([args[0], "--lake", str(tmp_path / "no-such-lake"), *args[1:]], tmp_path, "no lake at")
    assert not (tmp_path / "no-such-lake").exists()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "[1, NaN]"])
def test_a_nan_or_infinite_reference_names_the_record(tmp_path, value):
    src = tmp_path / "p.jsonl"
    src.write_text('{"prompt": "2+2=", "reference": "4"}\n' + f'{{"prompt": "3+3=", "reference": {value}}}\n')
    lake = tmp_path / "lake"
    one_line_error(["run", "--lake", str(lake), "--source", str(src), "-n", "1", "--max-tokens", "4"], tmp_path,
                   f"{src}:2: field 'reference' holds NaN or Infinity")
    assert not lake.exists() or snapshot(lake) == {}


def test_a_corrupt_page_names_the_file_and_the_deep_check(copy_lake, tmp_path):
    shard = sorted((copy_lake / "tokens").rglob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    for i in range(4, 40):  # the first page header: the footer stays intact, `check` without --deep passes
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    line = one_line_error(["sql", "--lake", str(copy_lake), "SELECT * FROM tokens", "-f", "csv"], tmp_path,
                          f"{shard}: a lake file cannot be read")
    assert f"tokenmill check --deep --lake {copy_lake}" in line


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a small tmpfs needs root (CI is root)")
def test_a_full_disk_is_one_line_naming_the_file_and_the_resume(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    lake = mnt / "lake"
    args = f"{TOKENMILL} run --lake {lake} --world arithmetic --prompts 64 -n 8 --run-id full-disk"
    # a 150 KB tmpfs in a mount namespace of its own: the generation shard does not fit
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=150k tmpfs {mnt} && {args}"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "no space left on the lake's disk" in errors[0] and "--run-id" in errors[0]
