"""A PDF report of the trial's analysis: requested by a user, built by a
Celery task (analysis.build_report), stored content-addressed with its
SHA-256 and the hash of the data it was made from."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from trial.models import Trial


class ReportKind(models.TextChoices):
    OPEN = "open", "Open (pooled, arms masked)"
    CLOSED = "closed", "Closed (by arm)"


class ReportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Report(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="reports")
    kind = models.CharField(max_length=10, choices=ReportKind.choices)
    status = models.CharField(max_length=10, choices=ReportStatus.choices, default=ReportStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)  # 0–100
    message = models.CharField(max_length=200, blank=True)  # the step in hand
    data_hash = models.CharField(max_length=64, blank=True)  # SHA-256 of the analysis data sets
    file = models.FileField(upload_to="reports/", max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)  # of the PDF
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="analysis_report_progress_max_100"),
        ]

    def __str__(self) -> str:
        return f"{self.trial.code} {self.kind} report #{self.pk}"

    @property
    def finished(self) -> bool:
        return self.status in (ReportStatus.DONE, ReportStatus.FAILED)
