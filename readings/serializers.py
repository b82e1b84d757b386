"""API shapes of the readings app. Input serializers check the types of a
request before it reaches a service (the services check the rules). Output
serializers describe what each reader receives; the instances are built
from readings.selectors, which decide what may be shown: a key that the
rules leave out (the study id and arm of a panel case, the interaction
record of a read outside the sequential design) is absent, not null.

Some fields are named like attributes of DRF's Serializer (data, fields,
errors, label, help, required): the metaclass takes them out of the class,
so they work; the `type: ignore[assignment]` comments tell mypy so."""

from __future__ import annotations

from typing import Any, get_args

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from readings.models import AdjudicationRule, Phase, Read, ReadingPolicy, ReadStatus, TaskKind, TaskStatus
from readings.scoring.fields import FieldKind
from readings.services import POLICY_FIELDS
from trial.serializers import REASON_MAX_LENGTH

# Kind, status and phase are schema components of their own: other apps
# already have enums named after fields called "kind", "status" and "phase".


@extend_schema_field({"type": "string", "enum": TaskKind.values}, component_name="ReadingTaskKind")
class TaskKindField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=TaskKind.choices, **kwargs)


@extend_schema_field({"type": "string", "enum": TaskStatus.values}, component_name="ReadingTaskStatus")
class TaskStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=TaskStatus.choices, **kwargs)


@extend_schema_field({"type": "string", "enum": Phase.values}, component_name="ReadPhase")
class PhaseField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=Phase.choices, **kwargs)


@extend_schema_field({"type": "string", "enum": ReadStatus.values}, component_name="ReadStatus")
class ReadStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=ReadStatus.choices, **kwargs)


@extend_schema_field({"type": "string", "enum": list(get_args(FieldKind))}, component_name="FormFieldKind")
class FormFieldKindField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=list(get_args(FieldKind)), **kwargs)


# --- Input ----------------------------------------------------------------------------

_PASSWORD_HELP = "Your password, re-entered to sign (21 CFR 11.200)"
_DATA_HELP = "The form's fields by name (see the case's `fields`)"
_OUTLINE_HELP = 'Lesion outline {"image": id, "frame": n, "points": [[x, y], …]} in image pixels; {} for none'


class DraftInput(serializers.Serializer):
    phase = PhaseField(help_text="The phase being read (the case's `phase`)")
    revision = serializers.IntegerField(
        min_value=0, help_text="The revision your page holds; a save over a newer one is refused (409)"
    )
    data = serializers.DictField(help_text=_DATA_HELP)  # type: ignore[assignment]
    outline = serializers.JSONField(
        required=False, allow_null=True, help_text=_OUTLINE_HELP + "; omitted or null: unchanged"
    )


class SignInput(DraftInput):
    password = serializers.CharField(
        trim_whitespace=False, max_length=4096, style={"input_type": "password"}, help_text=_PASSWORD_HELP
    )


class CorrectInput(serializers.Serializer):
    data = serializers.DictField(help_text=_DATA_HELP)  # type: ignore[assignment]
    outline = serializers.JSONField(
        required=False, allow_null=True, help_text=_OUTLINE_HELP + "; omitted or null: the signed outline"
    )
    # Blank is let through so that the service answers with its own message.
    reason = serializers.CharField(
        max_length=REASON_MAX_LENGTH, allow_blank=True, help_text="Why the signed read is corrected"
    )
    password = serializers.CharField(
        trim_whitespace=False, max_length=4096, style={"input_type": "password"}, help_text=_PASSWORD_HELP
    )


class OversightQueryInput(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=TaskStatus.choices, required=False, allow_blank=True, help_text="Only tasks in this status"
    )
    kind = serializers.ChoiceField(
        choices=TaskKind.choices, required=False, allow_blank=True, help_text="Only tasks of this kind"
    )


class _Fraction(serializers.FloatField):
    """A number; true/false is not one (the base field takes True as 1.0)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        return float(super().to_internal_value(data))


class ReadingPolicyInput(serializers.Serializer):
    """Any of the settings; the others keep their values. The ranges are
    checked by readings.services.reading_policy_set."""

    panel_fraction = _Fraction(required=False, help_text="Share of randomized cases read by the panel, 0–1")
    panel_readers_per_case = serializers.IntegerField(required=False, help_text="1–10")
    reread_fraction = _Fraction(required=False, help_text="Share of each panel reader's cases read twice, 0–1")
    washout_days = serializers.IntegerField(required=False, help_text="Days before a re-read opens, 0–365")
    adjudication_rule = serializers.ChoiceField(choices=AdjudicationRule.choices, required=False)
    clinical_due_days = serializers.IntegerField(required=False, help_text="1–365")
    panel_due_days = serializers.IntegerField(required=False, help_text="1–365")

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        if unknown:
            raise serializers.ValidationError(
                {
                    name: f"'{name}' is not a reading policy setting; the settings are {', '.join(POLICY_FIELDS)}."
                    for name in unknown
                }
            )
        return super().to_internal_value(data)


# --- Output: worklist and case ----------------------------------------------------------


class TaskRowSerializer(serializers.Serializer):
    """One row of a worklist; an instance is a dict (readings.apis)."""

    id = serializers.IntegerField()
    label = serializers.CharField(help_text="The study id (clinical reads) or a neutral case label (panel)")  # type: ignore[assignment]
    kind = TaskKindField()
    status = TaskStatusField()
    phase = PhaseField()
    due_at = serializers.DateTimeField()
    overdue = serializers.BooleanField()
    available_from = serializers.DateTimeField()
    url = serializers.CharField(help_text="This task in the API")
    study_id = serializers.CharField(required=False, help_text="Clinical reads only")
    arm = serializers.CharField(required=False, help_text="Clinical reads only")


class WorklistCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    in_progress = serializers.IntegerField()
    done = serializers.IntegerField()
    upcoming = serializers.IntegerField()


class WorklistSerializer(serializers.Serializer):
    pending = TaskRowSerializer(many=True)
    in_progress = TaskRowSerializer(many=True)
    done = TaskRowSerializer(many=True, help_text="The most recent first")
    upcoming = TaskRowSerializer(many=True, help_text="Re-reads still in their wash-out period")
    overdue = serializers.IntegerField(help_text="Open tasks past their due date")
    counts = WorklistCountsSerializer(help_text="Every task of each section, whatever the page")
    next = serializers.URLField(
        allow_null=True, help_text="The next page (`offset` + `limit`), if any section has more"
    )
    previous = serializers.URLField(allow_null=True, help_text="The previous page, if any")


class FieldChoiceSerializer(serializers.Serializer):
    value = serializers.JSONField(help_text="The code to send (text or a whole number)")
    label = serializers.CharField()  # type: ignore[assignment]
    points = serializers.IntegerField(required=False)
    help = serializers.CharField(required=False)


class RequiredIfSerializer(serializers.Serializer):
    field = serializers.CharField()
    values = serializers.ListField(child=serializers.JSONField())


class FormFieldSerializer(serializers.Serializer):
    """A field of the case report form (readings.scoring FieldSpec.to_dict)."""

    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    kind = FormFieldKindField()
    required = serializers.BooleanField()  # type: ignore[assignment]
    help = serializers.CharField(allow_blank=True)
    choices = FieldChoiceSerializer(many=True, required=False)
    required_if = RequiredIfSerializer(required=False)
    min_value = serializers.FloatField(required=False)
    max_value = serializers.FloatField(required=False)
    max_length = serializers.IntegerField(required=False)
    unit = serializers.CharField(required=False)


class CaseImageSerializer(serializers.Serializer):
    """An image of the case: geometry only, no file name or study details."""

    id = serializers.IntegerField()
    grey = serializers.BooleanField(help_text="Grey ultrasound: the viewer offers window/level")
    rows = serializers.IntegerField()
    columns = serializers.IntegerField()
    frames = serializers.IntegerField()
    key_frame = serializers.IntegerField()
    pixel_spacing_mm = serializers.ListField(
        child=serializers.FloatField(), allow_null=True, help_text="[row, column] spacing for the caliper"
    )
    frame_url = serializers.CharField(help_text="Template: replace {frame} with 0 … frames − 1")


class ReadSerializer(serializers.ModelSerializer):
    """One version of the reader's own read. `interaction` only for final
    reads of the sequential design (context: the task)."""

    phase = PhaseField()
    status = ReadStatusField()
    data = serializers.DictField(help_text="The form as entered")  # type: ignore[assignment]
    values = serializers.DictField(help_text="Validated values and computed scores, once signed")
    outline = serializers.DictField()
    interaction = serializers.DictField(required=False, help_text="Final reads of the sequential design only")

    class Meta:
        model = Read
        fields = [
            "id",
            "phase",
            "version",
            "current",
            "status",
            "data",
            "values",
            "outline",
            "revision",
            "saved_at",
            "signed_at",
            "signer_name",
            "signature_meaning",
            "correction_reason",
            "interaction",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Read) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not (instance.phase == Phase.FINAL and self.context["task"].sequential):
            data.pop("interaction")
        return data


class SignedReadSerializer(ReadSerializer):
    """A read just signed, and the phase open now (context: "next_phase")."""

    next_phase = serializers.SerializerMethodField()

    class Meta(ReadSerializer.Meta):
        fields = [*ReadSerializer.Meta.fields, "next_phase"]
        read_only_fields = fields

    @extend_schema_field(PhaseField(allow_null=True, help_text="The phase open now; null when the task is finished"))
    def get_next_phase(self, read: Read) -> str | None:
        next_phase: str | None = self.context["next_phase"]
        return next_phase


class CaseSerializer(serializers.Serializer):
    """A case as its reader receives it; an instance is a dict (readings.apis)."""

    id = serializers.IntegerField()
    label = serializers.CharField()  # type: ignore[assignment]
    kind = TaskKindField()
    status = TaskStatusField()
    form = serializers.CharField()
    phase = PhaseField(help_text="The phase open now")
    due_at = serializers.DateTimeField()
    fields = FormFieldSerializer(many=True)  # type: ignore[assignment]
    signature_meaning = serializers.CharField(help_text="What signing the open phase means (21 CFR 11.50)")
    images = CaseImageSerializer(many=True)
    reads = ReadSerializer(many=True, help_text="Your own reads, every version, oldest first")
    sequential = serializers.BooleanField(required=False, help_text="Clinical reads only")
    arm = serializers.CharField(required=False, help_text="Clinical reads only")
    ai_available = serializers.BooleanField(required=False, help_text="Clinical reads only")


# --- Output: errors --------------------------------------------------------------------


class ReadErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    field = serializers.CharField(allow_null=True, required=False)
    code = serializers.CharField(required=False)
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.CharField(), help_text="One message per field; __all__ for the read as a whole"
    )


class ReadConflictSerializer(ReadErrorSerializer):
    current = ReadSerializer(allow_null=True, help_text="The server's version, to merge your changes into")


# --- Output: the AI second opinion ------------------------------------------------------


class ModelSummarySerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    sha256 = serializers.CharField()


class AiOpinionSerializer(serializers.Serializer):
    """readings.selectors.AiOpinion.to_dict() with the layers' URLs."""

    id = serializers.IntegerField()
    image = serializers.IntegerField()
    status = serializers.CharField()
    reason = serializers.CharField(allow_blank=True, help_text="Why the model abstained")
    category = serializers.CharField(allow_blank=True)
    category_probability = serializers.FloatField(allow_null=True)
    category_probabilities = serializers.DictField(child=serializers.FloatField())
    measurements = serializers.DictField()
    quality = serializers.DictField()
    frame = serializers.IntegerField(allow_null=True)
    has_mask = serializers.BooleanField()
    has_heatmap = serializers.BooleanField()
    model = ModelSummarySerializer()
    contour_url = serializers.CharField(required=False, help_text="PNG overlay, when the result has a mask")
    heatmap_url = serializers.CharField(required=False, help_text="PNG overlay, when the result has a heat map")


class AiSecondOpinionSerializer(serializers.Serializer):
    results = AiOpinionSerializer(many=True)


# --- Output: oversight and policy --------------------------------------------------------


class OverseenTaskSerializer(serializers.Serializer):
    """A task as monitors and trial admins oversee it: no AI payload."""

    id = serializers.IntegerField()
    study_id = serializers.CharField(source="participant.study_id")
    site = serializers.CharField(source="site.code")
    kind = TaskKindField()
    status = TaskStatusField()
    assignee = serializers.SerializerMethodField()
    due_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)

    def get_assignee(self, task: Any) -> str:
        return task.assignee.get_username() if task.assignee is not None else ""


class OverseenReadSerializer(serializers.ModelSerializer):
    """A signed read version for oversight: values, signature and reason."""

    reader = serializers.CharField(source="reader.get_username")
    values = serializers.DictField()

    class Meta:
        model = Read
        fields = [
            "id",
            "phase",
            "version",
            "current",
            "reader",
            "values",
            "outline_mask_sha256",
            "signed_at",
            "signer_name",
            "signature_meaning",
            "correction_reason",
        ]
        read_only_fields = fields


class AiDisplayLogSerializer(serializers.Serializer):
    displayed_at = serializers.DateTimeField()
    what = serializers.CharField(help_text="suggestion, contour or heatmap")
    reader = serializers.CharField()


class OverseenTaskDetailSerializer(OverseenTaskSerializer):
    """A task with its signed reads and AI display log (context: "reads",
    "ai_displays" from readings.selectors)."""

    reads = serializers.SerializerMethodField()
    ai_displays = serializers.SerializerMethodField()

    @extend_schema_field(OverseenReadSerializer(many=True))
    def get_reads(self, task: Any) -> Any:
        return OverseenReadSerializer(self.context["reads"], many=True).data

    @extend_schema_field(AiDisplayLogSerializer(many=True))
    def get_ai_displays(self, task: Any) -> Any:
        rows = [
            {"displayed_at": displayed_at, "what": what, "reader": reader}
            for displayed_at, what, reader in self.context["ai_displays"]
        ]
        return AiDisplayLogSerializer(rows, many=True).data


class ReadingPolicySerializer(serializers.ModelSerializer):
    """The trial's reading policy; its secret seed is never sent."""

    class Meta:
        model = ReadingPolicy
        fields = ["trial", *POLICY_FIELDS, "updated_at"]
        read_only_fields = fields
