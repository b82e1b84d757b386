"""Randomization: schemes, their secret seeds, per-stratum sequences,
imported allocation tables, allocations and unblindings.

Writes go through randomization.services; reads that reveal arms go through
randomization.selectors, which decide who sees a real arm, a masked "A"/"B"
label, or nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from randomization import algorithms
from trial.models import Participant, ProtocolVersion, Site, Trial


class Arm(models.TextChoices):
    AI_ASSISTED = algorithms.AI_ASSISTED, "AI-assisted"
    SPECIALIST_ONLY = algorithms.SPECIALIST_ONLY, "Specialist only"


class Method(models.TextChoices):
    PERMUTED_BLOCKS = "permuted_blocks", "Stratified permuted blocks (random block sizes)"
    MINIMIZATION = "minimization", "Pocock–Simon minimization"
    SIMPLE = "simple", "Simple randomization"


class ImbalanceMeasure(models.TextChoices):
    RANGE = algorithms.RANGE, "Range"
    VARIANCE = algorithms.VARIANCE, "Variance"


class SequenceSource(models.TextChoices):
    SEED = "seed", "Generated from the trial's secret seed"
    TABLE = "table", "Imported allocation table"


class SchemeStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active (locked)"
    SUPERSEDED = "superseded", "Superseded"


class RandomizationScheme(models.Model):
    """One version of a trial's randomization scheme. Locked once active: a
    change is a new version tied to a new protocol version, with a reason."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="randomization_schemes")
    version = models.PositiveIntegerField()
    protocol_version = models.ForeignKey(ProtocolVersion, on_delete=models.PROTECT, related_name="+")
    method = models.CharField(max_length=24, choices=Method.choices)
    ratio_ai_assisted = models.PositiveSmallIntegerField(default=1)
    ratio_specialist_only = models.PositiveSmallIntegerField(default=1)
    block_sizes = models.JSONField(default=list, blank=True)
    factors = models.JSONField(
        default=list, help_text="Stratification (blocks, simple) or minimization factors: site, indication, covariates"
    )
    factor_weights = models.JSONField(default=dict, blank=True)
    imbalance_measure = models.CharField(max_length=16, choices=ImbalanceMeasure.choices, default=algorithms.RANGE)
    minimization_probability = models.FloatField(default=0.8)
    source = models.CharField(max_length=8, choices=SequenceSource.choices, default=SequenceSource.SEED)
    table_sha256 = models.CharField(max_length=64, blank=True)
    low_table_warning = models.PositiveIntegerField(default=10, help_text="Warn when a stratum has this few left")
    status = models.CharField(max_length=16, choices=SchemeStatus.choices, default=SchemeStatus.DRAFT)
    seed_commitment = models.CharField(max_length=64, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    seed_revealed_at = models.DateTimeField(null=True, blank=True)
    # Trial-wide running number of allocations, handed out under this row's lock.
    allocations_made = models.PositiveIntegerField(default=0)
    change_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["trial", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "version"], name="scheme_version_unique"),
            models.UniqueConstraint(
                fields=["trial"], condition=models.Q(status="active"), name="one_active_scheme_per_trial"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trial.code} randomization v{self.version} ({self.get_method_display()})"

    @property
    def ratio(self) -> algorithms.Ratio:
        return algorithms.Ratio(self.ratio_ai_assisted, self.ratio_specialist_only)

    @property
    def ratio_label(self) -> str:
        return f"{self.ratio_ai_assisted}:{self.ratio_specialist_only}"


class SchemeSecret(models.Model):
    """The scheme's secret seed, kept apart from everything that is displayed
    or serialized; no selector, page, API or export reads this table. Only its
    sha256 commitment is public until the seed is revealed after unblinding."""

    scheme = models.OneToOneField(RandomizationScheme, on_delete=models.PROTECT, related_name="secret")
    seed_hex = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"secret of {self.scheme}"

    @property
    def seed(self) -> bytes:
        return bytes.fromhex(self.seed_hex)


class StratumSequence(models.Model):
    """Where one stratum stands in its sequence. Locked during allocation."""

    scheme = models.ForeignKey(RandomizationScheme, on_delete=models.PROTECT, related_name="strata")
    stratum = models.CharField(max_length=255)
    next_position = models.PositiveIntegerField(default=1)
    block_index = models.PositiveIntegerField(default=0)
    block_start = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scheme", "stratum"], name="stratum_unique")]

    def __str__(self) -> str:
        return f"{self.stratum} @ {self.next_position}"


class AllocationTableEntry(models.Model):
    """One row of an imported allocation table."""

    scheme = models.ForeignKey(RandomizationScheme, on_delete=models.PROTECT, related_name="table_entries")
    stratum = models.CharField(max_length=255)
    position = models.PositiveIntegerField()
    arm = models.CharField(max_length=24, choices=Arm.choices)
    used = models.BooleanField(default=False)

    class Meta:
        ordering = ["scheme", "stratum", "position"]
        constraints = [models.UniqueConstraint(fields=["scheme", "stratum", "position"], name="table_position_unique")]
        indexes = [models.Index(fields=["scheme", "stratum", "used", "position"])]

    def __str__(self) -> str:
        return f"{self.stratum} #{self.position}"


class Allocation(models.Model):
    participant = models.OneToOneField(Participant, on_delete=models.PROTECT, related_name="allocation")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="allocations")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="allocations")
    scheme = models.ForeignKey(RandomizationScheme, on_delete=models.PROTECT, related_name="allocations")
    arm = models.CharField(max_length=24, choices=Arm.choices)
    stratum = models.CharField(max_length=255)
    stratum_position = models.PositiveIntegerField()
    sequence_number = models.PositiveIntegerField(help_text="Trial-wide running number")
    details = models.JSONField(default=dict, blank=True, help_text="Minimization scores and draws")
    allocated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    allocated_at = models.DateTimeField()

    class Meta:
        ordering = ["trial", "sequence_number"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "sequence_number"], name="allocation_sequence_unique"),
            models.UniqueConstraint(
                fields=["scheme", "stratum", "stratum_position"], name="allocation_position_unique"
            ),
        ]
        indexes = [models.Index(fields=["trial", "site"])]

    def __str__(self) -> str:
        return f"Allocation #{self.sequence_number} of {self.participant}"


class Unblinding(models.Model):
    """An emergency unblinding: one participant's arm revealed to one person
    who was blind to it, with the reason."""

    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="unblindings")
    revealed_to = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Unblinding of {self.allocation.participant} for {self.revealed_to}"
