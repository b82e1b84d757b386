"""API shapes of randomization. Output serializers show what the caller may
see: an arm only as randomization.selectors.arm_view decides, a scheme never
with its seed. Input serializers check a request's shape before a service
checks its rules."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

from randomization import algorithms
from randomization.models import Allocation, ImbalanceMeasure, Method, RandomizationScheme, Unblinding
from randomization.selectors import ArmView, BalanceRow

REASON_MAX_LENGTH = 2000
MAX_RATIO_PART = 10
TABLE_MAX_BYTES = 5 * 1024 * 1024
_RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")

# --- Output -------------------------------------------------------------------------


def arm_fields(view: ArmView) -> dict[str, Any]:
    """The arm as the caller may see it: the real arm, a masked label with no
    arm, or neither."""
    return {"arm": view.arm, "arm_label": view.label or None, "masked": view.masked}


class RandomizationSerializer(serializers.Serializer):
    """The answer to a randomization request (first or repeated)."""

    participant = serializers.IntegerField(source="allocation.participant_id")
    study_id = serializers.CharField(source="allocation.participant.study_id")
    sequence_number = serializers.IntegerField(source="allocation.sequence_number")
    stratum = serializers.CharField(source="allocation.stratum")
    stratum_position = serializers.IntegerField(source="allocation.stratum_position")
    allocated_at = serializers.DateTimeField(source="allocation.allocated_at")
    allocated_by = serializers.CharField(source="allocation.allocated_by.username")
    arm = serializers.CharField(allow_null=True, source="view.arm")
    arm_label = serializers.SerializerMethodField()
    masked = serializers.BooleanField(source="view.masked")
    created = serializers.BooleanField(help_text="False when the participant had already been randomized")
    warnings = serializers.ListField(child=serializers.CharField())

    def get_arm_label(self, value: Any) -> str | None:
        return value["view"].label or None


class AllocationStatusSerializer(serializers.Serializer):
    """Whether a participant is randomized, and the arm as the caller may see it."""

    randomized = serializers.BooleanField()
    arm = serializers.CharField(allow_null=True)
    arm_label = serializers.CharField(allow_null=True)
    masked = serializers.BooleanField()
    sequence_number = serializers.IntegerField(allow_null=True)
    allocated_at = serializers.DateTimeField(allow_null=True)


def allocation_status(allocation: Allocation | None, view: ArmView) -> dict[str, Any]:
    return {
        "randomized": allocation is not None,
        **arm_fields(view),
        "sequence_number": allocation.sequence_number if allocation else None,
        "allocated_at": allocation.allocated_at if allocation else None,
    }


class SchemeSerializer(serializers.ModelSerializer):
    """A scheme version: its design and its public commitment, never its seed."""

    protocol_version = serializers.CharField(source="protocol_version.version", read_only=True)
    ratio = serializers.CharField(source="ratio_label", read_only=True)
    method_label = serializers.CharField(source="get_method_display", read_only=True)
    table_rows = serializers.SerializerMethodField()

    class Meta:
        model = RandomizationScheme
        # An explicit list: a field added to the model is not published by accident.
        fields = [
            "id",
            "version",
            "protocol_version",
            "method",
            "method_label",
            "ratio",
            "block_sizes",
            "factors",
            "factor_weights",
            "imbalance_measure",
            "minimization_probability",
            "source",
            "table_sha256",
            "table_rows",
            "low_table_warning",
            "status",
            "seed_commitment",
            "activated_at",
            "seed_revealed_at",
            "allocations_made",
            "change_reason",
            "created_at",
        ]
        read_only_fields = fields

    def get_table_rows(self, scheme: RandomizationScheme) -> int:
        return scheme.table_entries.count() if scheme.table_sha256 else 0


class TableImportSerializer(serializers.Serializer):
    scheme = SchemeSerializer()
    rows = serializers.IntegerField()
    strata = serializers.IntegerField()
    sha256 = serializers.CharField()


class BalanceRowSerializer(serializers.Serializer):
    group = serializers.CharField()
    ai_assisted = serializers.IntegerField()
    specialist_only = serializers.IntegerField()
    total = serializers.IntegerField()
    difference = serializers.IntegerField(help_text="AI-assisted minus specialist-only")

    def to_representation(self, instance: BalanceRow) -> dict[str, Any]:
        return {
            "group": instance.group,
            "ai_assisted": instance.ai_assisted,
            "specialist_only": instance.specialist_only,
            "total": instance.total,
            "difference": instance.difference,
        }


class BalanceSerializer(serializers.Serializer):
    trial = serializers.CharField(source="trial.code")
    overall = BalanceRowSerializer()
    strata = BalanceRowSerializer(many=True)
    margins = BalanceRowSerializer(many=True, help_text="Per factor level, e.g. 'site=C01'")


class UnblindingSerializer(serializers.ModelSerializer):
    participant = serializers.IntegerField(source="allocation.participant_id", read_only=True)
    study_id = serializers.CharField(source="allocation.participant.study_id", read_only=True)
    trial = serializers.CharField(source="allocation.trial.code", read_only=True)
    site = serializers.CharField(source="allocation.site.code", read_only=True)
    revealed_to = serializers.CharField(source="revealed_to.username", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)

    class Meta:
        model = Unblinding
        fields = [
            "id",
            "participant",
            "study_id",
            "trial",
            "site",
            "revealed_to",
            "requested_by",
            "reason",
            "created_at",
        ]
        read_only_fields = fields


# --- Input ----------------------------------------------------------------------------


def parse_ratio(value: str) -> tuple[int, int]:
    """'2:1' → (2, 1); raises ValueError with a message for anything else."""
    match = _RATIO.match(value or "")
    if match is None:
        raise ValueError("Write the ratio as AI-assisted:specialist-only, e.g. 1:1 or 2:1.")
    parts = int(match.group(1)), int(match.group(2))
    if not all(1 <= part <= MAX_RATIO_PART for part in parts):
        raise ValueError(f"Both parts of the ratio must be whole numbers from 1 to {MAX_RATIO_PART}.")
    return parts


class SchemeConfigureInput(serializers.Serializer):
    method = serializers.ChoiceField(choices=Method.choices)
    ratio = serializers.CharField(default="1:1", help_text="AI-assisted:specialist-only, e.g. 1:1 or 2:1")
    block_sizes = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=100),
        required=False,
        default=list,
        max_length=10,
        help_text="Permuted blocks only: multiples of the ratio's sum, drawn at random",
    )
    factors = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        default=list,
        max_length=10,
        help_text="site, indication and/or the trial's stratification covariates",
    )
    factor_weights = serializers.DictField(
        child=serializers.FloatField(), required=False, default=dict, help_text="Minimization weights per factor"
    )
    imbalance_measure = serializers.ChoiceField(choices=ImbalanceMeasure.choices, default=algorithms.RANGE)
    minimization_probability = serializers.FloatField(default=0.8)
    low_table_warning = serializers.IntegerField(min_value=0, max_value=10000, default=10)
    protocol_version = serializers.IntegerField(
        required=False, allow_null=True, help_text="Protocol version id; the latest when omitted"
    )
    reason = serializers.CharField(
        max_length=REASON_MAX_LENGTH, required=False, allow_blank=True, default="", help_text="Needed for a change"
    )

    def validate_ratio(self, value: str) -> tuple[int, int]:
        try:
            return parse_ratio(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from error


class TableUploadInput(serializers.Serializer):
    file = serializers.FileField(help_text="CSV: sequence, arm, and one column per stratification factor")

    def validate_file(self, value: Any) -> Any:
        if value.size > TABLE_MAX_BYTES:
            raise serializers.ValidationError(f"The table is larger than {TABLE_MAX_BYTES // (1024 * 1024)} MB.")
        return value


class UnblindInput(serializers.Serializer):
    revealed_to = serializers.IntegerField(help_text="User id of the person who learns the arm")
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH, trim_whitespace=True)
    confirmation = serializers.CharField(max_length=200, help_text="Type 'UNBLIND <study id>'")
