"""API shapes: output serializers describe rows; input serializers validate a
request before it reaches a service."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from trial.models import (
    AuditEvent,
    Bethesda,
    CervicalHistology,
    Consent,
    EligibilityAssessment,
    FigoStage,
    Indication,
    Participant,
    ProtocolVersion,
    ReferenceKind,
    ReferenceStandardResult,
    ScreeningEntry,
    ScreeningStatus,
    Sex,
    Site,
    ThyroidHistology,
    ThyroidM,
    ThyroidN,
    ThyroidT,
    Trial,
    Withdrawal,
    WithdrawalScope,
)

REASON_MAX_LENGTH = 2000

# --- Output -------------------------------------------------------------------------


class ProtocolVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProtocolVersion
        fields = ["id", "version", "effective_date", "consent_form_version", "eligibility_criteria", "amendment_reason"]


class TrialSerializer(serializers.ModelSerializer):
    end_date = serializers.DateField(read_only=True)
    protocol_versions = ProtocolVersionSerializer(many=True, read_only=True)

    class Meta:
        model = Trial
        fields = [
            "id",
            "code",
            "title",
            "registry_id",
            "indications",
            "planned_sample_size",
            "start_date",
            "duration_months",
            "end_date",
            "status",
            "stratification_covariates",
            "protocol_versions",
        ]


class SiteSerializer(serializers.ModelSerializer):
    trial: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Site
        fields = ["id", "trial", "code", "name", "country", "target_participants", "active"]


class EligibilitySerializer(serializers.ModelSerializer):
    protocol_version = serializers.CharField(source="protocol_version.version", read_only=True)
    assessed_by = serializers.CharField(source="assessed_by.username", read_only=True)

    class Meta:
        model = EligibilityAssessment
        fields = ["protocol_version", "answers", "is_eligible", "failed_criteria", "assessed_by", "assessed_at"]


class ScreeningEntrySerializer(serializers.ModelSerializer):
    trial = serializers.CharField(source="trial.code", read_only=True)
    site = serializers.CharField(source="site.code", read_only=True)
    eligibility = serializers.SerializerMethodField()
    participant = serializers.SerializerMethodField()

    class Meta:
        model = ScreeningEntry
        fields = [
            "id",
            "trial",
            "site",
            "screening_number",
            "screened_on",
            "indication",
            "year_of_birth",
            "sex",
            "status",
            "exclusion_reasons",
            "eligibility",
            "participant",
            "created_at",
        ]

    def get_eligibility(self, entry: ScreeningEntry) -> dict[str, Any] | None:
        assessment = getattr(entry, "eligibility", None)
        return EligibilitySerializer(assessment).data if assessment is not None else None

    def get_participant(self, entry: ScreeningEntry) -> dict[str, Any] | None:
        participant = getattr(entry, "participant", None)
        return {"id": participant.pk, "study_id": participant.study_id} if participant is not None else None


class ConsentSerializer(serializers.ModelSerializer):
    protocol_version = serializers.CharField(source="protocol_version.version", read_only=True)
    taken_by = serializers.CharField(source="taken_by.username", read_only=True)
    recorded_by = serializers.CharField(source="recorded_by.username", read_only=True)

    class Meta:
        model = Consent
        fields = ["id", "protocol_version", "form_version", "consented_at", "taken_by", "recorded_by", "recorded_at"]


class WithdrawalSerializer(serializers.ModelSerializer):
    recorded_by = serializers.CharField(source="recorded_by.username", read_only=True)

    class Meta:
        model = Withdrawal
        fields = ["id", "withdrawn_on", "scope", "reason", "recorded_by", "recorded_at"]


class ParticipantSerializer(serializers.ModelSerializer):
    trial = serializers.CharField(source="trial.code", read_only=True)
    site = serializers.CharField(source="site.code", read_only=True)
    screening_number = serializers.CharField(source="screening.screening_number", read_only=True)
    indication = serializers.CharField(read_only=True)
    year_of_birth = serializers.IntegerField(read_only=True)
    sex = serializers.CharField(read_only=True)
    status = serializers.CharField(source="status_label", read_only=True)
    consents = ConsentSerializer(many=True, read_only=True)
    withdrawals = WithdrawalSerializer(many=True, read_only=True)

    class Meta:
        model = Participant
        fields = [
            "id",
            "study_id",
            "trial",
            "site",
            "screening_number",
            "indication",
            "year_of_birth",
            "sex",
            "covariates",
            "enrolled_at",
            "status",
            "follow_up_stopped",
            "ai_processing_stopped",
            "data_withdrawn",
            "withdrawn_on",
            "consents",
            "withdrawals",
        ]


class ReferenceResultSerializer(serializers.ModelSerializer):
    recorded_by = serializers.CharField(source="recorded_by.username", read_only=True)
    summary = serializers.CharField(read_only=True)
    is_high_grade = serializers.BooleanField(read_only=True, allow_null=True)

    class Meta:
        model = ReferenceStandardResult
        fields = [
            "id",
            "kind",
            "sample_date",
            "result_date",
            "cervical_histology",
            "bethesda_category",
            "thyroid_histology",
            "figo_stage",
            "tnm_t",
            "tnm_n",
            "tnm_m",
            "notes",
            "summary",
            "is_high_grade",
            "recorded_by",
            "recorded_at",
        ]


class AuditEventSerializer(serializers.ModelSerializer):
    trial = serializers.CharField(source="trial.code", read_only=True, allow_null=True, default=None)
    site = serializers.CharField(source="site.code", read_only=True, allow_null=True, default=None)

    class Meta:
        model = AuditEvent
        fields = [
            "sequence",
            "occurred_at",
            "actor_username",
            "role",
            "action",
            "object_type",
            "object_id",
            "object_label",
            "trial",
            "site",
            "before",
            "after",
            "reason",
            "client_ip",
            "request_id",
            "previous_hash",
            "hash",
        ]


class RecruitmentRowSerializer(serializers.Serializer):
    trial = serializers.CharField(source="trial.code")
    site = serializers.CharField(source="site.code")
    site_name = serializers.CharField(source="site.name")
    screened = serializers.IntegerField()
    eligible = serializers.IntegerField()
    ineligible = serializers.IntegerField()
    consented = serializers.IntegerField()
    withdrawn = serializers.IntegerField()
    target = serializers.IntegerField()
    percent_of_target = serializers.FloatField(allow_null=True)


# --- Input ----------------------------------------------------------------------------


def _reason_field(required: bool) -> serializers.CharField:
    return serializers.CharField(
        max_length=REASON_MAX_LENGTH, required=required, allow_blank=not required, trim_whitespace=True
    )


class ScreeningCreateInput(serializers.Serializer):
    site = serializers.IntegerField(help_text="Site id")
    screened_on = serializers.DateField()
    indication = serializers.ChoiceField(choices=Indication.choices)
    year_of_birth = serializers.IntegerField(min_value=1800, max_value=2200)
    sex = serializers.ChoiceField(choices=Sex.choices)


class ScreeningCorrectInput(serializers.Serializer):
    screened_on = serializers.DateField(required=False)
    year_of_birth = serializers.IntegerField(required=False, min_value=1800, max_value=2200)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False)
    reason = _reason_field(required=True)


class EligibilityInput(serializers.Serializer):
    answers = serializers.DictField(child=serializers.BooleanField(), allow_empty=False)
    reason = _reason_field(required=False)


class ScreeningCloseInput(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=[ScreeningStatus.DECLINED, ScreeningStatus.NOT_ENROLLED])
    reason = _reason_field(required=True)


class EnrollInput(serializers.Serializer):
    form_version = serializers.CharField(max_length=32)
    consented_at = serializers.DateTimeField()
    taken_by = serializers.IntegerField(help_text="User id of the person who took consent")
    covariates = serializers.DictField(child=serializers.CharField(max_length=64), required=False)


class ConsentRenewInput(serializers.Serializer):
    form_version = serializers.CharField(max_length=32)
    consented_at = serializers.DateTimeField()
    taken_by = serializers.IntegerField()


class WithdrawInput(serializers.Serializer):
    withdrawn_on = serializers.DateField()
    scope = serializers.ChoiceField(choices=WithdrawalScope.choices)
    reason = _reason_field(required=True)


class ReferenceResultInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ReferenceKind.choices)
    sample_date = serializers.DateField()
    result_date = serializers.DateField()
    cervical_histology = serializers.ChoiceField(choices=CervicalHistology.choices, required=False, allow_blank=True)
    bethesda_category = serializers.ChoiceField(choices=Bethesda.choices, required=False, allow_null=True)
    thyroid_histology = serializers.ChoiceField(choices=ThyroidHistology.choices, required=False, allow_blank=True)
    figo_stage = serializers.ChoiceField(choices=FigoStage.choices, required=False, allow_blank=True)
    tnm_t = serializers.ChoiceField(choices=ThyroidT.choices, required=False, allow_blank=True)
    tnm_n = serializers.ChoiceField(choices=ThyroidN.choices, required=False, allow_blank=True)
    tnm_m = serializers.ChoiceField(choices=ThyroidM.choices, required=False, allow_blank=True)
    notes = serializers.CharField(max_length=4000, required=False, allow_blank=True)


class ReferenceResultCorrectInput(ReferenceResultInput):
    kind = serializers.ChoiceField(choices=ReferenceKind.choices, required=False)
    sample_date = serializers.DateField(required=False)
    result_date = serializers.DateField(required=False)
    reason = _reason_field(required=True)


class AuditFilterInput(serializers.Serializer):
    trial = serializers.IntegerField(required=False)
    site = serializers.IntegerField(required=False)
    actor = serializers.CharField(required=False, max_length=150)
    action = serializers.CharField(required=False, max_length=64)
    object_type = serializers.CharField(required=False, max_length=64)
    object_id = serializers.CharField(required=False, max_length=64)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    field = serializers.CharField(allow_null=True, required=False)
    code = serializers.CharField(required=False)
