"""Readings: the trial's reading rules, reading tasks, reads (versioned,
signed) and the record of every display of the AI second opinion.

Models hold data and row-local derived state only. Every write goes through
readings.services; every read a user makes goes through readings.selectors,
which decide what each role may see (arm, AI output, other reads).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from trial.models import Participant, Site, Trial


class TaskKind(models.TextChoices):
    CLINICAL = "clinical", "Clinical read"
    PANEL = "panel", "Blinded panel read"
    ADJUDICATION = "adjudication", "Adjudication"


class TaskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


class Phase(models.TextChoices):
    UNAIDED = "unaided", "Unaided read (before the AI second opinion)"
    FINAL = "final", "Final read"


class ReadStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SIGNED = "signed", "Signed"


class FormKind(models.TextChoices):
    COLPOSCOPY = "colposcopy", "Colposcopy"
    THYROID = "thyroid", "Thyroid ultrasound"


class AdjudicationRule(models.TextChoices):
    NONE = "none", "Never adjudicate"
    HIGH_GRADE = "high_grade", "Panel reads disagree on high-grade disease (CIN2+ / TR4–TR5 or cancer suspected)"
    CATEGORY = "category", "Panel reads disagree on the category (normal / low-grade / high-grade)"


class ReadingPolicy(models.Model):
    """How a trial's reading tasks are made: one row per trial, set by the
    trial admin (readings.services.reading_policy_set)."""

    trial = models.OneToOneField(Trial, on_delete=models.PROTECT, related_name="reading_policy")
    panel_fraction = models.FloatField(default=1.0, help_text="Share of randomized cases read by the panel (0–1)")
    panel_readers_per_case = models.PositiveSmallIntegerField(default=2)
    reread_fraction = models.FloatField(default=0.0, help_text="Share of panel cases each reader reads a second time")
    washout_days = models.PositiveSmallIntegerField(default=0, help_text="Days before a re-read becomes available")
    adjudication_rule = models.CharField(
        max_length=16, choices=AdjudicationRule.choices, default=AdjudicationRule.HIGH_GRADE
    )
    clinical_due_days = models.PositiveSmallIntegerField(default=7)
    panel_due_days = models.PositiveSmallIntegerField(default=28)
    seed = models.CharField(max_length=64, help_text="Secret for case selection and each reader's case order")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "reading policies"

    def __str__(self) -> str:
        return f"Reading policy of {self.trial.code}"


class ReadingTask(models.Model):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="reading_tasks")
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    form = models.CharField(max_length=16, choices=FormKind.choices)
    # Sequential design (AI-assisted arm): an unaided read is signed before
    # the AI second opinion is shown, then the final read.
    sequential = models.BooleanField(default=False)
    # Empty: any eligible reader may take it (the site's clinicians for a
    # clinical read, the panel for an adjudication).
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="reading_tasks"
    )
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    # A panel reader's own, reproducible case order (hash of the policy seed,
    # the reader and the case).
    order_key = models.CharField(max_length=64, blank=True)
    rereading_of = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    available_from = models.DateTimeField()
    due_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant"], condition=models.Q(kind="clinical"), name="reading_task_one_clinical"
            ),
            models.UniqueConstraint(
                fields=["participant", "assignee"],
                condition=models.Q(kind="panel", rereading_of__isnull=True),
                name="reading_task_one_panel_read_per_reader",
            ),
            models.UniqueConstraint(
                fields=["rereading_of"], condition=models.Q(rereading_of__isnull=False), name="reading_task_one_reread"
            ),
            models.UniqueConstraint(
                fields=["participant"], condition=models.Q(kind="adjudication"), name="reading_task_one_adjudication"
            ),
        ]
        indexes = [
            models.Index(fields=["assignee", "status"]),
            models.Index(fields=["site", "kind", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} task {self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)


class Read(models.Model):
    """One version of one read. A draft is saved as often as the reader
    likes (`revision` guards against two tabs overwriting each other); a
    signed read is never changed: a correction is a new version with a
    reason, and the old version is kept (current=False)."""

    task = models.ForeignKey(ReadingTask, on_delete=models.PROTECT, related_name="reads")
    phase = models.CharField(max_length=8, choices=Phase.choices)
    version = models.PositiveSmallIntegerField(default=1)
    current = models.BooleanField(default=True)
    status = models.CharField(max_length=8, choices=ReadStatus.choices, default=ReadStatus.DRAFT)
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    form = models.CharField(max_length=16, choices=FormKind.choices)
    data = models.JSONField(default=dict, blank=True, help_text="The form as entered (drafts may be incomplete)")
    values = models.JSONField(default=dict, blank=True, help_text="Validated values and computed scores, once signed")
    outline = models.JSONField(default=dict, blank=True, help_text='{"image": id, "frame": n, "points": [[x, y], …]}')
    outline_mask = models.FileField(max_length=255, blank=True, help_text="PNG, 0 background / 255 inside")
    outline_mask_sha256 = models.CharField(max_length=64, blank=True)
    revision = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(help_text="When the reader first opened this phase")
    saved_at = models.DateTimeField(null=True, blank=True)
    signed_at = models.DateTimeField(null=True, blank=True)
    signer_name = models.CharField(max_length=300, blank=True)
    signature_meaning = models.CharField(max_length=300, blank=True)
    supersedes = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="superseded_by"
    )
    correction_reason = models.TextField(blank=True, max_length=2000)
    interaction = models.JSONField(
        default=dict, blank=True, help_text="Final reads of the sequential design: how the AI was used"
    )

    class Meta:
        ordering = ["task", "phase", "version"]
        constraints = [
            models.UniqueConstraint(fields=["task", "phase", "version"], name="read_version_unique"),
            models.UniqueConstraint(
                fields=["task", "phase"], condition=models.Q(current=True), name="read_one_current_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_phase_display()} v{self.version} of task {self.task_id}"

    @property
    def is_signed(self) -> bool:
        return self.status == ReadStatus.SIGNED


class AiDisplay(models.Model):
    """One display of the AI second opinion to a reader: written each time
    the overlay or the suggestion is served, so the trial can show it was
    never shown in the specialist-only arm or before the unaided read."""

    task = models.ForeignKey(ReadingTask, on_delete=models.PROTECT, related_name="ai_displays")
    ai_result = models.ForeignKey("ai_engine.AiResult", on_delete=models.PROTECT, related_name="+")
    reader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    what = models.CharField(max_length=16, help_text="suggestion, contour or heatmap")
    displayed_at = models.DateTimeField()

    class Meta:
        ordering = ["displayed_at", "id"]
        indexes = [models.Index(fields=["task", "displayed_at"])]

    def __str__(self) -> str:
        return f"AI {self.what} shown for task {self.task_id} at {self.displayed_at:%Y-%m-%d %H:%M:%S}"
