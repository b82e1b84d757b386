"""The model registry in the trial admin site, read-only: registering,
deploying and retiring go through ai_engine.services (the register_model
command), each with its audit event."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ai_engine.models import ModelVersion, TrialModel
from trial.admin import ReadOnlyAdmin, trial_admin_site


@admin.register(ModelVersion, site=trial_admin_site)
class ModelVersionModelAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "indication", "arch", "status", "short_sha256", "registered_at"]
    list_filter = ["indication", "status", "arch"]
    search_fields = ["name", "version", "sha256"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        # The registry is shared by all trials: no trial scope to apply.
        return admin.ModelAdmin.get_queryset(self, request)

    @admin.display(description="sha256")
    def short_sha256(self, obj: ModelVersion) -> str:
        return obj.sha256[:16] + "…"


@admin.register(TrialModel, site=trial_admin_site)
class TrialModelModelAdmin(ReadOnlyAdmin):
    list_display = ["trial", "indication", "model_version", "active", "activated_at", "activated_by_username"]
    list_filter = ["trial", "indication", "active"]
