"""Starting and stopping Celery worker processes from Python: the demo
(`manage.py demo_server`), the integration tests and the benchmarks run real
workers exactly as an operator would (`celery -A config worker -Q inference,reports`),
with the settings given in the environment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def worker_command(
    *,
    queues: str = "inference,reports",
    concurrency: int = 1,
    pool: str = "prefork",
    hostname: str = "consilium@%h",
    beat: bool = False,
    loglevel: str = "INFO",
) -> list[str]:
    """The `celery worker` command line, run by this Python."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--hostname",
        hostname,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        command += ["--beat", "--schedule", str(Path(os.environ.get("CONSILIUM_VAR_DIR", BASE_DIR / "var")) / "beat")]
    return command


def start_worker(
    *,
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    **options: object,
) -> subprocess.Popen[bytes]:
    """Start a worker in its own process group (so that stopping it stops
    its pool processes too); its output goes to log_path or is discarded."""
    environment = {**os.environ, **(env or {})}
    output = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115 — owned by the child
    try:
        return subprocess.Popen(  # noqa: S603 — our own interpreter and fixed arguments
            worker_command(**options),  # type: ignore[arg-type]
            cwd=BASE_DIR,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log_path is not None:
            output.close()  # type: ignore[union-attr]


def stop_worker(process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> int:
    """Warm shutdown (SIGTERM: finish the task in hand), then SIGKILL of the
    whole process group if it does not stop in time. Returns the exit code."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    if process.poll() is None:
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=10)
    else:
        # Pool processes left behind by a crashed parent.
        _signal_group(process, signal.SIGKILL)
    return int(process.returncode)


def pool_process_ids(process: subprocess.Popen[bytes]) -> list[int]:
    """The worker's pool (child) processes, from /proc (Linux)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        return [int(pid) for pid in children.read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _signal_group(process: subprocess.Popen[bytes], number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, number)
