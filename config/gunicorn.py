"""The production web server: gunicorn with this module as its configuration.

    gunicorn -c config/gunicorn.py config.wsgi

Threaded workers (gthread): a request mostly waits on PostgreSQL, so a few
processes with a few threads each keep the cores busy without one process
per concurrent request (each process holds the whole app, PyTorch included,
about 450 MB before copy-on-write sharing). The defaults fit the 2-core
machine the load benchmark runs on: one process per core plus one, four
threads each, so that 12 requests are served at once and the rest wait in
the listen queue. Every setting can be overridden from the environment.
"""

from __future__ import annotations

import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError as error:
        raise SystemExit(f"{name} must be an integer, not {value!r}") from error


_cores = os.cpu_count() or 1

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = _int("GUNICORN_WORKERS", _cores + 1)
threads = _int("GUNICORN_THREADS", 4)
# The app (Django, PyTorch) is imported once, before the workers fork: they
# share its memory and start at once. Nothing opens a database connection at
# import, so no connection is shared between processes.
preload_app = True
# Uploads of large DICOM cines and report downloads may take a while; a
# worker silent for longer than this is restarted.
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = 30
# Seconds an idle keep-alive connection is held open for the client's next request.
keepalive = _int("GUNICORN_KEEPALIVE", 5)
backlog = _int("GUNICORN_BACKLOG", 2048)
# Recycle worker processes now and then so that slow leaks cannot build up;
# the jitter keeps them from restarting together.
max_requests = _int("GUNICORN_MAX_REQUESTS", 5000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 500)
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Behind a TLS proxy on this host, trust its X-Forwarded-Proto (settings:
# BEHIND_TLS_PROXY); the client address for the audit trail comes from
# TRUSTED_PROXY_COUNT in the settings, not from here.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
