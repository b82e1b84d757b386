"""The Celery application. Workers: `celery -A config worker`.

The broker comes from CELERY_BROKER_URL (settings). Tasks live in each app's
tasks.py and stay thin: they take ids, re-fetch rows and call one service.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("consilium")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
