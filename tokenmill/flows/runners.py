"""Where a flow's tasks run: threads in the flow's process, or a Ray cluster.

A flow's task runner is fixed when the flow starts, and a subflow does not inherit its
parent's, so the parent starts each subflow with `with_runner(flow, cfg.runner)`.

Tasks that load a model (generate, score, label, train, evaluate) get their timeout and
their `model` tag from `timed` (the tag only where a concurrency limit on it exists) and go
through `model_tasks`: on threads they run one after another in the flow's process (one engine
already uses every core); on Ray they are all submitted at once and the cluster spreads
them, each asking for `runner.gpus` GPUs.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from tokenmill.config import RunnerConfig
from tokenmill.errors import TokenmillError

MODEL_TAG = "model"  # the tag of tasks that load a model: `tokenmill serve --model-slots` limits it


def task_runner(runner: RunnerConfig):
    if runner.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as e:
        raise TokenmillError(f"the ray task runner needs prefect-ray ({e})",
                             fix="pip install 'tokenmill[ray]', or use --task-runner threads") from e
    # the dashboard is a web server per cluster start: a local Ray for one flow has no use for it
    init = {} if runner.address else {"include_dashboard": False}
    return RayTaskRunner(address=runner.address, init_kwargs=init)


def with_runner(flow, runner: RunnerConfig, tokens: float | None = None):
    """`flow` with the task runner `runner` describes (call it like the flow) and, given the
    most `tokens` of model work it can do, the timeout `runner.timeouts` sizes for that."""
    timeout = runner.timeouts.flow(tokens) if tokens is not None else None
    return flow.with_options(task_runner=task_runner(runner), timeout_seconds=timeout)


def timed(task, runner: RunnerConfig, tokens: float):
    """`task`, a task that loads a model, with the timeout `runner.timeouts` sizes for `tokens`
    tokens of model work and the tag `model_tags` gives it."""
    return task.with_options(timeout_seconds=runner.timeouts.task(tokens), tags=model_tags())


def model_tags() -> list[str]:
    """[MODEL_TAG] where the Prefect server has a concurrency limit on it (`tokenmill serve
    --model-slots`), else none. A tagged task asks the server for a slot of that limit before
    it starts: a round trip (~90 ms a task measured on a temporary server, more while the
    cores train) that buys nothing where no limit exists, and one seed of the efficacy study
    runs ~400 model tasks. Asked once per `timed` call, so a limit created later applies to
    the next stage."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_concurrency_limit_by_tag(MODEL_TAG)
        except ObjectNotFound:
            return []
    return [MODEL_TAG]


def on_ray() -> bool:
    """Whether the running flow's tasks go to a Ray cluster."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx is not None and type(ctx.task_runner).__name__ == "RayTaskRunner"


@contextlib.contextmanager
def _gpus(n: float) -> Iterator[None]:
    if not n:
        yield
        return
    from prefect_ray.context import remote_options

    with remote_options(num_gpus=n):
        yield


def check_gpus(gpus: float) -> None:
    """A task asking for more GPUs than the cluster has would wait forever: refuse it."""
    if not gpus:
        return
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    if gpus > have:
        raise TokenmillError(f"each model task asks Ray for {gpus:g} GPU(s), the cluster has {have:g}",
                             fix="start Ray on GPU nodes, or lower --gpus (0 runs on CPUs)")


def model_tasks(runner: RunnerConfig, calls: list[tuple[Callable, tuple, dict]]) -> list[Any]:
    """Run `(task, args, kwargs)` calls that load models; their results in order.

    A later call may take an earlier call's result only on threads; keep such chains inside
    one task. Each returned result is the task's value (futures are resolved here).
    """
    if not on_ray():
        return [t(*a, **kw) for t, a, kw in calls]
    check_gpus(runner.gpus)
    with _gpus(runner.gpus):
        futures = [t.submit(*a, **kw) for t, a, kw in calls]
    return [f.result() for f in futures]
