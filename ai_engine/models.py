"""The model registry (CONSORT-AI item 5(i): which version of the algorithm
was used): every registered checkpoint with the facts needed to report and
trust it, and each trial's deployments of it, history included.

AiResult holds what one registered version said about one image, tied to
that exact version, so every AI opinion can be traced to its checkpoint.

Rows are written by ai_engine.services only. A checkpoint file is kept in
content-addressed storage, MEDIA_ROOT/models/<sha256>.pt, beside its
`sha256sum`-format side file, so that loading it later verifies the bytes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from imaging.models import Image
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


class AiResultStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed (may be retried)"
    ABSTAINED = "abstained", "Abstained (image unfit for the model)"
    CANCELLED = "cancelled", "Cancelled (the participant withdrew from AI processing)"


class AiResult(models.Model):
    """The output of one model version for one image: at most one row per
    image and version, however often the work is delivered. The mask (PNG,
    0/255) and the probability map (compressed npz of float16) lie in the
    imaging content-addressed storage; their sha256 is checked on every read.
    No pixel data is kept in the database or the audit trail."""

    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="ai_results")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="results")
    status = models.CharField(max_length=16, choices=AiResultStatus.choices, default=AiResultStatus.QUEUED)
    reason = models.TextField(blank=True, help_text="Why it abstained or failed")
    mask = models.FileField(max_length=255, blank=True, help_text="PNG, 0 background / 255 lesion")
    mask_sha256 = models.CharField(max_length=64, blank=True)
    probability = models.FileField(max_length=255, blank=True, help_text="npz, float16 lesion probability")
    probability_sha256 = models.CharField(max_length=64, blank=True)
    measurements = models.JSONField(default=dict, blank=True)
    category = models.CharField(max_length=64, blank=True)
    category_probability = models.FloatField(null=True, blank=True)
    category_probabilities = models.JSONField(default=dict, blank=True)
    quality = models.JSONField(default=dict, blank=True, help_text="ok, reason, figures")
    frame_index = models.PositiveIntegerField(null=True, blank=True)
    device = models.CharField(max_length=200, blank=True)
    runtime_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Delivery (ai_engine.jobs): the row is its own outbox entry. Null
    # dispatched_at = not handed to the broker yet (it was down); the sweeper
    # sends it. claimed_by/lease_expires_at say which worker process runs it.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker process running it")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    batch_size = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Images in the forward pass that made it"
    )
    # Outputs others can open: a DICOM Segmentation (DICOM input) and a PNG
    # overlay, in the content-addressed storage like the mask.
    segmentation = models.FileField(max_length=255, blank=True, help_text="DICOM Segmentation (highdicom)")
    segmentation_sha256 = models.CharField(max_length=64, blank=True)
    overlay = models.FileField(max_length=255, blank=True, help_text="PNG: the image with the mask drawn on it")
    overlay_sha256 = models.CharField(max_length=64, blank=True)
    export_note = models.TextField(blank=True, help_text="Why an export could not be made")

    class Meta:
        ordering = ["image", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="ai_result_once_per_image_and_model")
        ]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["model_version", "status", "created_at"], name="ai_result_batch_claim"),
        ]

    def __str__(self) -> str:
        return f"AI result of image {self.image_id} by {self.model_version_id} ({self.get_status_display()})"
