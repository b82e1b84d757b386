"""The model registry (CONSORT-AI item 5(i): which version of the algorithm
was used): every registered checkpoint with the facts needed to report and
trust it, and each trial's deployments of it, history included.

Rows are written by ai_engine.services only. A checkpoint file is kept in
content-addressed storage, MEDIA_ROOT/models/<sha256>.pt, beside its
`sha256sum`-format side file, so that loading it later verifies the bytes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from trial.models import Indication, Trial

STORAGE_FOLDER = "models"


class ModelStatus(models.TextChoices):
    DRAFT = "draft", "Draft (registered, not deployed)"
    ACTIVE = "active", "Active (deployed in a trial)"
    RETIRED = "retired", "Retired (not to be deployed again)"


class ModelVersion(models.Model):
    """One registered checkpoint. Its content never changes: a retrained
    network is a new version with a new sha256."""

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=32)
    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(max_length=255, help_text="Relative to MEDIA_ROOT: models/<sha256>.pt")
    size_bytes = models.PositiveBigIntegerField(default=0)
    arch = models.CharField(max_length=32)
    architecture = models.JSONField(default=dict, help_text="Everything needed to rebuild the network")
    training = models.JSONField(default=dict, blank=True, help_text="Training data description and settings")
    metrics = models.JSONField(default=dict, blank=True)
    preprocessing = models.JSONField(default=dict, blank=True)
    categories = models.JSONField(default=list, blank=True)
    indication = models.CharField(max_length=16, choices=Indication.choices)
    intended_use = models.TextField(blank=True, max_length=4000)
    model_card = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=ModelStatus.choices, default=ModelStatus.DRAFT)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    registered_by_username = models.CharField(max_length=150)
    registered_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    retirement_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["name", "-registered_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="model_version_name_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.sha256[:12]})"


class TrialModel(models.Model):
    """A model version deployed for one indication of one trial. A change of
    model deactivates the old row and adds a new one, so the history of what
    produced each AI opinion is kept; at most one row per trial and
    indication is active."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="model_deployments")
    indication = models.CharField(max_length=16, choices=Indication.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    active = models.BooleanField(default=True)
    activated_at = models.DateTimeField(auto_now_add=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    activated_by_username = models.CharField(max_length=150)
    reason = models.TextField(blank=True, max_length=2000)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["trial", "indication", "-activated_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["trial", "indication"],
                condition=models.Q(active=True),
                name="one_active_model_per_trial_indication",
            ),
        ]

    def __str__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"{self.trial.code} {self.indication}: {self.model_version} ({state})"
