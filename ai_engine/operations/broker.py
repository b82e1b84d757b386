"""How many jobs wait on the broker: a passive declare of the queue, asked
of whatever broker the Celery app uses, that reports a broker which does not
answer instead of failing the page."""

from __future__ import annotations

from typing import Any

from ai_engine.operations.records import BrokerQueue
from ai_engine.tasks import INFERENCE_QUEUE
from config.celery import app

BROKER_TIMEOUT_SECONDS = 2.0
NO_QUEUE_NOTE = "the broker holds no such queue yet (none declared, or an empty one removed): nothing waits"


def broker_queue(queue: str = INFERENCE_QUEUE, *, timeout: float = BROKER_TIMEOUT_SECONDS) -> BrokerQueue:
    """Messages waiting on `queue`, asked of the broker the Celery app uses
    (Redis, RabbitMQ, kombu's filesystem or memory transport) with a passive
    declare; a broker that does not answer within `timeout` is reported, not raised."""
    url = str(app.conf.broker_url or "")
    options: dict[str, Any] = {}
    if url.startswith(("redis", "rediss", "sentinel")):
        options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    elif url.startswith(("amqp", "pyamqp", "amqps")):
        options = {"read_timeout": timeout, "write_timeout": timeout}
    try:
        with app.connection_for_read(connect_timeout=timeout, transport_options=options) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            try:
                declared = connection.default_channel.queue_declare(queue=queue, passive=True)
            except Exception as error:
                # No such queue yet (Redis drops an empty list): nothing waits.
                if str(getattr(error, "reply_code", "")) == "404":
                    return BrokerQueue(queue, 0, note=NO_QUEUE_NOTE)
                raise
            return BrokerQueue(queue, int(declared.message_count))
    except Exception as error:  # any transport's connection or protocol error
        return BrokerQueue(queue, None, error=f"{type(error).__name__}: {error}"[:500])
