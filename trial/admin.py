"""Django admin for trial admins: trial set-up through the same services as
everything else (each save is a service call with its audit event), clinical
data read-only, nothing ever deleted.

Access: an active user holding the trial-admin role (or a superuser). A trial
admin sees only the trials they administer. User accounts themselves are
managed by superusers.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from trial import services
from trial.actors import Actor
from trial.errors import DomainError
from trial.models import (
    AuditEvent,
    Consent,
    Membership,
    Participant,
    ProtocolVersion,
    ReferenceStandardResult,
    ScreeningEntry,
    Site,
    Trial,
    Withdrawal,
)
from trial.permissions import Capability
from trial.selectors import has_capability, memberships_of


def _administered_trial_ids(request: HttpRequest) -> set[int] | None:
    """Trial ids the user administers; None means every trial (superuser)."""
    if request.user.is_superuser:
        return None
    return {m.trial_id for m in memberships_of(request.user) if m.role == "trial_admin"}


class TrialAdminSite(admin.AdminSite):
    site_header = "Consilium — trial administration"
    site_title = "Consilium administration"
    index_title = "Trial set-up"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and (user.is_superuser or has_capability(user, Capability.MANAGE_TRIAL)))


trial_admin_site = TrialAdminSite(name="admin")


class ScopedAdmin(admin.ModelAdmin):
    """Rows of the administered trials only; no deletion anywhere."""

    trial_lookup = "trial_id__in"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        trial_ids = _administered_trial_ids(request)
        return queryset if trial_ids is None else queryset.filter(**{self.trial_lookup: trial_ids})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return trial_admin_site.has_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return trial_admin_site.has_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return trial_admin_site.has_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return trial_admin_site.has_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        self.save_through_service(request, obj, form, change)

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:
            # The admin's transaction rolled back: nothing was written. Say why.
            self.message_user(request, f"Not saved: {error.message}", level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_through_service(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        raise DomainError("This record is read-only here.")


class ReadOnlyAdmin(ScopedAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReasonForm(forms.ModelForm):
    change_reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when changing a record already saved (audit trail).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk and self.has_changed() and not data.get("change_reason", "").strip():
            self.add_error("change_reason", "A reason is required to change data already entered.")
        return data


class TrialForm(ReasonForm):
    indications_text = forms.CharField(
        label="Indications", help_text="Comma-separated: cervical, thyroid", required=False
    )
    covariates_json = forms.CharField(
        label="Stratification covariates (JSON)", widget=forms.Textarea, required=False, initial="[]"
    )

    class Meta:
        model = Trial
        fields = ["code", "title", "registry_id", "planned_sample_size", "start_date", "duration_months", "status"]

    def clean_covariates_json(self) -> list[dict[str, Any]]:
        text = self.cleaned_data.get("covariates_json") or "[]"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"Not valid JSON: {error.msg}") from error
        if not isinstance(value, list):
            raise forms.ValidationError("A JSON list of covariates is expected.")
        return value


@admin.register(Trial, site=trial_admin_site)
class TrialModelAdmin(ScopedAdmin):
    form = TrialForm
    trial_lookup = "id__in"
    list_display = ["code", "title", "status", "start_date", "planned_sample_size"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["status"]
        return ["code", "title", "registry_id", "planned_sample_size", "start_date", "duration_months"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [
                "code",
                "title",
                "registry_id",
                "indications_text",
                "planned_sample_size",
                "start_date",
                "duration_months",
                "covariates_json",
            ]
        return [
            "code",
            "title",
            "registry_id",
            "planned_sample_size",
            "start_date",
            "duration_months",
            "status",
            "change_reason",
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def save_through_service(self, request: HttpRequest, obj: Trial, form: Any, change: bool) -> None:
        actor = Actor.from_request(request)
        if change:
            if "status" in form.changed_data:
                services.trial_set_status(
                    actor=actor, trial=obj, status=obj.status, reason=form.cleaned_data["change_reason"]
                )
            return
        indications = [i.strip() for i in form.cleaned_data.get("indications_text", "").split(",") if i.strip()]
        created = services.trial_create(
            actor=actor,
            code=obj.code,
            title=obj.title,
            registry_id=obj.registry_id,
            indications=indications,
            planned_sample_size=obj.planned_sample_size,
            start_date=obj.start_date,
            duration_months=obj.duration_months,
            stratification_covariates=form.cleaned_data.get("covariates_json") or [],
        )
        obj.pk = created.pk


class SiteForm(ReasonForm):
    class Meta:
        model = Site
        fields = ["trial", "code", "name", "country", "target_participants"]


@admin.register(Site, site=trial_admin_site)
class SiteModelAdmin(ScopedAdmin):
    form = SiteForm
    list_display = ["code", "name", "trial", "country", "target_participants", "active"]
    list_filter = ["trial"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def save_through_service(self, request: HttpRequest, obj: Site, form: Any, change: bool) -> None:
        created = services.site_add(
            actor=Actor.from_request(request),
            trial=obj.trial,
            code=obj.code,
            name=obj.name,
            country=obj.country,
            target_participants=obj.target_participants,
        )
        obj.pk = created.pk


class ProtocolVersionForm(forms.ModelForm):
    criteria_json = forms.CharField(label="Eligibility criteria (JSON)", widget=forms.Textarea)

    class Meta:
        model = ProtocolVersion
        fields = ["trial", "version", "effective_date", "consent_form_version", "amendment_reason"]

    def clean_criteria_json(self) -> list[dict[str, Any]]:
        try:
            value = json.loads(self.cleaned_data["criteria_json"])
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"Not valid JSON: {error.msg}") from error
        if not isinstance(value, list):
            raise forms.ValidationError("A JSON list of criteria is expected.")
        return value


@admin.register(ProtocolVersion, site=trial_admin_site)
class ProtocolVersionModelAdmin(ScopedAdmin):
    form = ProtocolVersionForm
    list_display = ["trial", "version", "effective_date", "consent_form_version"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An approved protocol version is frozen; an amendment is a new version.
        return obj is None and super().has_change_permission(request)

    def save_through_service(self, request: HttpRequest, obj: ProtocolVersion, form: Any, change: bool) -> None:
        created = services.protocol_version_add(
            actor=Actor.from_request(request),
            trial=obj.trial,
            version=obj.version,
            effective_date=obj.effective_date,
            consent_form_version=obj.consent_form_version,
            eligibility_criteria=form.cleaned_data["criteria_json"],
            amendment_reason=obj.amendment_reason,
        )
        obj.pk = created.pk


class MembershipForm(ReasonForm):
    class Meta:
        model = Membership
        fields = ["user", "trial", "role", "site", "active"]


@admin.register(Membership, site=trial_admin_site)
class MembershipModelAdmin(ScopedAdmin):
    form = MembershipForm
    list_display = ["user", "trial", "role", "site", "active", "granted_at"]
    list_filter = ["trial", "role", "active"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["user", "trial", "role", "site"] if obj is not None else ["active"]

    def save_through_service(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        actor = Actor.from_request(request)
        if change:
            if "active" in form.changed_data and not obj.active:
                services.membership_revoke(actor=actor, membership=obj, reason=form.cleaned_data["change_reason"])
            elif "active" in form.changed_data:
                services.membership_grant(actor=actor, user=obj.user, trial=obj.trial, role=obj.role, site=obj.site)
            return
        created = services.membership_grant(actor=actor, user=obj.user, trial=obj.trial, role=obj.role, site=obj.site)
        obj.pk = created.pk


@admin.register(ScreeningEntry, site=trial_admin_site)
class ScreeningEntryModelAdmin(ReadOnlyAdmin):
    list_display = ["screening_number", "site", "screened_on", "indication", "status"]
    list_filter = ["trial", "site", "status", "indication"]


@admin.register(Participant, site=trial_admin_site)
class ParticipantModelAdmin(ReadOnlyAdmin):
    list_display = ["study_id", "site", "enrolled_at", "follow_up_stopped", "ai_processing_stopped", "data_withdrawn"]
    list_filter = ["trial", "site"]
    search_fields = ["study_id"]


@admin.register(Consent, site=trial_admin_site)
class ConsentModelAdmin(ReadOnlyAdmin):
    trial_lookup = "participant__trial_id__in"
    list_display = ["participant", "form_version", "consented_at", "taken_by"]


@admin.register(Withdrawal, site=trial_admin_site)
class WithdrawalModelAdmin(ReadOnlyAdmin):
    trial_lookup = "participant__trial_id__in"
    list_display = ["participant", "scope", "withdrawn_on"]


@admin.register(ReferenceStandardResult, site=trial_admin_site)
class ReferenceResultModelAdmin(ReadOnlyAdmin):
    trial_lookup = "participant__trial_id__in"
    list_display = ["participant", "kind", "sample_date", "summary"]


@admin.register(AuditEvent, site=trial_admin_site)
class AuditEventModelAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "occurred_at", "actor_username", "role", "action", "object_type", "object_id"]
    list_filter = ["trial", "action"]
    search_fields = ["actor_username", "object_id", "action"]


class SuperuserOnlyMixin:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_superuser)


class AccountAdmin(SuperuserOnlyMixin, UserAdmin):
    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # Accounts that acted in the trial are deactivated, never deleted (Part 11).
        return False


trial_admin_site.register(get_user_model(), AccountAdmin)
trial_admin_site.register(Group, type("GroupAccountAdmin", (SuperuserOnlyMixin, GroupAdmin), {}))
