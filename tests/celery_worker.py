"""Real Celery workers for integration tests: a worker process started the
way an operator starts one (config.workers), pointed at the test database,
the test's media folder and a real Redis broker. Tests using these must be
transactional (the worker sees only committed rows)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
import redis
from django.conf import settings
from django.db import connection

from config.celery import app
from config.workers import start_worker, stop_worker

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def redis_url(port: int = REDIS_PORT, db: int | None = None) -> str:
    if db is None:
        # One database index per test process, so that two test runs on one
        # machine (SQLite and PostgreSQL passes) do not share a queue.
        db = int(os.environ.get("CONSILIUM_TEST_REDIS_DB", 1 + os.getpid() % 15))
    return f"redis://{REDIS_HOST}:{port}/{db}"


def _reset_connections() -> None:
    """Forget pooled broker connections, so that the next publish uses the
    broker now configured."""
    app._pool = None  # Celery's connection pool, made again for the new URL
    app.amqp._producer_pool = None
    kombu.pools.reset()  # kombu's global pools, keyed by connection


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Jobs published by this (test) process go to `url` meanwhile."""
    app.conf.broker_url = url
    app.conf.broker_transport_options = {"socket_connect_timeout": 1, "socket_timeout": 5}
    _reset_connections()
    try:
        yield
    finally:
        app.conf.broker_url = "memory://"
        app.conf.broker_transport_options = {}
        _reset_connections()


def worker_environment(broker_url: str, **extra: str) -> dict[str, str]:
    """Settings for a worker that shares this test's database and media."""
    database = connection.settings_dict
    env = {
        "CELERY_BROKER_URL": broker_url,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "AI_TORCH_THREADS": "1",
        "LOG_LEVEL": "INFO",
        "DB_CONN_MAX_AGE": "0",
    }
    if connection.vendor == "postgresql":
        user, host, port = database["USER"], database["HOST"] or "127.0.0.1", database["PORT"] or 5432
        env["DATABASE_URL"] = f"postgres://{user}@{host}:{port}/{database['NAME']}"
    else:
        env["DATABASE_URL"] = ""
        env["SQLITE_PATH"] = str(database["NAME"])
    env.update(extra)
    return env


class Worker:
    """A running worker; its log is kept for the test's failure message."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"The worker exited ({self.process.returncode}):\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"The worker never logged {text!r}:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_worker(self.process)


@pytest.fixture
def start_celery_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start real workers (`celery -A config worker -Q inference,reports`) and stop
    them after the test."""
    started: list[Worker] = []

    def start(broker_url: str, *, concurrency: int = 1, ready: bool = True, **env: str) -> Worker:
        log_path = tmp_path / f"worker-{len(started)}.log"
        process = start_worker(
            env=worker_environment(broker_url, **env),
            log_path=log_path,
            concurrency=concurrency,
            hostname=f"test{len(started)}@%h",
        )
        worker = Worker(process, log_path)
        started.append(worker)
        if ready:
            worker.wait_for_log("ready.")
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def redis_broker() -> Iterator[str]:
    """The machine's Redis as broker, in a database index of this test
    process's own, emptied before and after."""
    url = redis_url()
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as error:
        raise AssertionError(
            f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT} (.ci/run starts it): {error}"
        ) from error
    client.flushdb()
    with publishing_to(url):
        yield url
    client.flushdb()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((REDIS_HOST, 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A Redis server of the test's own, to stop and start at will."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary

    @property
    def url(self) -> str:
        return redis_url(self.port, 0)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(host=REDIS_HOST, port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, worker: Worker | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            log = worker.log()[-4000:] if worker is not None else ""
            raise AssertionError(f"Timed out waiting for {what}.\n{log}")
        time.sleep(0.2)
