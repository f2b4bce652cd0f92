"""`tokenmill serve`: a local Prefect server, the `tokenmill` work pool, the deployments of
`deployments/prefect.yaml` and a process worker, all on loopback, stopped together.

  server     `prefect server start --host 127.0.0.1 --port P` (the UI at http://127.0.0.1:P)
  pool       process work pool `tokenmill`, and a tag concurrency limit on `model` tasks
             (tasks that load a model) so concurrent flow runs share the machine's cores
  deploy     `prefect --no-prompt deploy --all --prefect-file …` from the working directory
  worker     `prefect worker start --pool tokenmill`

Every child runs in its own process group and is stopped by pid: SIGINT, then SIGKILL
after a grace period (workers ignore SIGTERM).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tokenmill.errors import TokenmillError
from tokenmill.flows.runners import MODEL_TAG


@dataclass
class Service:
    """A started child process and where its output goes."""

    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Stack:
    api_url: str
    home: Path
    services: list[Service] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return prefect_env(self.api_url, self.home)

    def stop(self, grace: float = 10) -> None:
        for svc in reversed(self.services):  # worker first, server last
            stop_process(svc.proc, grace)


def prefect_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def prefect_env(api_url: str | None, home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def default_prefect_file() -> Path:
    """deployments/prefect.yaml of the working directory, else of the tokenmill checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / "deployments" / "prefect.yaml").is_file():
            return base / "deployments" / "prefect.yaml"
    raise TokenmillError("no deployments/prefect.yaml here or in the tokenmill checkout",
                         fix="pass --deployments PATH (a prefect.yaml), or --no-deploy")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_process(name: str, cmd: list[str], env: dict, log_dir: Path, cwd: str | None = None) -> Service:
    log = log_dir / f"{name}.log"
    fh = log.open("ab")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                            start_new_session=True)
    fh.close()
    return Service(name, proc, log)


def stop_process(proc: subprocess.Popen, grace: float = 15, first: int = signal.SIGINT) -> None:
    """`first` (SIGINT) to the process group, SIGKILL if it is still there after `grace` seconds."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # the group's stragglers (a flow run the worker started)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_healthy(api_url: str, svc: Service, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not svc.alive():
            raise TokenmillError(f"the Prefect server exited (code {svc.proc.returncode}): {svc.tail(600)}",
                                 where=str(svc.log), fix="read the log; is another server using the port or PREFECT_HOME?")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TokenmillError(f"the Prefect server did not answer within {timeout:.0f} s", where=str(svc.log),
                         fix="read the log, or raise --timeout")


def run_prefect(args: list[str], env: dict, cwd: str | None = None, timeout: float = 300) -> str:
    out = subprocess.run(prefect_cmd() + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise TokenmillError(f"`prefect {' '.join(args)}` failed: {(out.stdout + out.stderr)[-1500:]}",
                             fix="see Prefect's message above")
    return out.stdout


def start(host: str = "127.0.0.1", port: int = 4200, pool: str = "tokenmill", home: Path | None = None,
          prefect_file: Path | None = None, deploy: bool = True, model_slots: int = 1, worker: bool = True,
          timeout: float = 120, say=lambda msg: None) -> Stack:
    """Start server (+ pool, deployments, worker); the caller stops the returned stack."""
    if port_in_use(host, port):
        raise TokenmillError(f"{host}:{port} is already in use",
                             fix="pick another --port, or point PREFECT_API_URL at the server that is running there")
    home = Path(home or os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser().resolve()
    logs = home / "tokenmill-serve"
    logs.mkdir(parents=True, exist_ok=True)
    prefect_file = Path(prefect_file).resolve() if prefect_file else (default_prefect_file() if deploy else None)
    if deploy and not prefect_file.is_file():
        raise TokenmillError(f"no such deployments file {prefect_file}", fix="pass --deployments PATH")
    api_url = f"http://{host}:{port}/api"
    stack = Stack(api_url, home)
    try:
        say(f"starting the Prefect server on http://{host}:{port} (logs: {logs})")
        # the UI's own API address: without it the UI of a server on another port calls :4200
        ui_env = {"PREFECT_UI_API_URL": api_url, "PREFECT_SERVER_API_HOST": host, "PREFECT_SERVER_API_PORT": str(port)}
        server = start_process("server", prefect_cmd() + ["server", "start", "--host", host, "--port", str(port)],
                               {**prefect_env(None, home), **ui_env}, logs)
        stack.services.append(server)
        wait_healthy(api_url, server, timeout)
        env = stack.env()
        run_prefect(["work-pool", "create", pool, "--type", "process", "--overwrite"], env)
        if model_slots > 0:
            run_prefect(["concurrency-limit", "create", MODEL_TAG, str(model_slots)], env)
        if deploy:
            say(f"deploying {prefect_file}")
            run_prefect(["--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)], env)
        if worker:
            stack.services.append(start_process("worker", prefect_cmd() + ["worker", "start", "--pool", pool,
                                                                            "--type", "process"], env, logs))
    except BaseException:
        stack.stop()
        raise
    return stack


def wait(stack: Stack) -> int:
    """Block until SIGINT/SIGTERM (→ 0) or until a child dies (→ 1); the caller stops the stack."""
    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while stop["signal"] is None:
            dead = [s for s in stack.services if not s.alive()]
            if dead:
                print(f"tokenmill serve: {dead[0].name} exited (code {dead[0].proc.returncode}); log {dead[0].log}:\n"
                      f"{dead[0].tail(800)}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
