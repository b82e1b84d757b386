"""Celery tasks of the AI engine; thin, as every task here: ids in, one call
into ai_engine.jobs. Workers: `celery -A config worker -Q inference`
(ai_engine.jobs explains the delivery guarantees)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import task_prerun
from django.conf import settings
from django.db import close_old_connections

from ai_engine import jobs

logger = logging.getLogger(__name__)

INFERENCE_QUEUE = "inference"


@shared_task(
    bind=True,
    name="ai_engine.run_inference",
    queue=INFERENCE_QUEUE,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=int(getattr(settings, "AI_INFERENCE_MAX_RETRIES", 5)),
)
def run_inference(self: Any, result_id: int) -> int:
    """Judge the image of one AI result (micro-batched with other waiting
    results of the same model). Transient errors retry with exponential
    backoff; once the retries are spent the result fails with the error.
    Returns how many results this call finished."""
    try:
        return len(jobs.process(result_id))
    except jobs.TRANSIENT_ERRORS as error:
        if self.request.retries >= self.max_retries:
            logger.error("AI result %s: giving up after %s retries (%s).", result_id, self.request.retries, error)
            jobs.give_up(result_id, error)
            return 0
        raise self.retry(exc=error, countdown=jobs.backoff_seconds(self.request.retries)) from error


@shared_task(name="ai_engine.dispatch_pending", queue=INFERENCE_QUEUE, ignore_result=True)
def dispatch_pending() -> dict[str, int]:
    """The outbox sweeper, run by Celery beat every 30 s."""
    sweep = jobs.dispatch_pending()
    if sweep.queued_images or sweep.dispatched or sweep.waiting:
        logger.info("AI sweep: %s", sweep)
    return {"queued_images": sweep.queued_images, "dispatched": sweep.dispatched, "waiting": sweep.waiting}


@task_prerun.connect(dispatch_uid="ai-engine-fresh-enough-connection")
def _drop_unusable_connections(task: Any = None, **kwargs: Any) -> None:
    """As Django does before each request: a connection that failed (the
    database restarted) or outlived DB_CONN_MAX_AGE is closed and reopened on
    use. The others are reused (CELERY_DB_REUSE_MAX). A task run eagerly, in
    the caller's process, leaves the caller's connection alone."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
