"""API shapes of the AI engine: the operations summary (ai_engine.operations)
as JSON, and the query that asks for it. The recent results name the files
each has, not links: the files are downloaded from the page (session login),
each download an audit event."""

from __future__ import annotations

import math
from typing import Any

from rest_framework import serializers

from ai_engine.operations import MAX_WINDOW_DAYS

# --- Input ----------------------------------------------------------------------------


class OperationsQueryInput(serializers.Serializer):
    trial = serializers.SlugField(max_length=32, help_text="Code of a trial whose AI you administer")
    days = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_WINDOW_DAYS,
        help_text="Adds a latency window: results finished in the last N days",
    )


# --- Output ---------------------------------------------------------------------------


class FiniteFloatField(serializers.FloatField):
    """A float, or null where it is not finite (JSON has no infinity)."""

    def to_representation(self, value: Any) -> Any:
        number = float(value)
        return number if math.isfinite(number) else None


class BrokerQueueSerializer(serializers.Serializer):
    queue = serializers.CharField()
    waiting = serializers.IntegerField(allow_null=True, help_text="Messages waiting (all trials); null: no answer")
    error = serializers.CharField(help_text="Why the broker did not answer")
    note = serializers.CharField()


class StatusCountSerializer(serializers.Serializer):
    status = serializers.CharField()
    description = serializers.CharField(source="label")
    count = serializers.IntegerField()


class LatencySerializer(serializers.Serializer):
    window = serializers.CharField(source="label")
    hours = serializers.FloatField()
    results = serializers.IntegerField()
    mean_seconds = serializers.FloatField(allow_null=True)
    p50_seconds = serializers.FloatField(allow_null=True)
    p95_seconds = serializers.FloatField(allow_null=True)
    mean_runtime_ms = serializers.FloatField(allow_null=True)
    mean_batch_size = serializers.FloatField(allow_null=True)


class ReasonCountSerializer(serializers.Serializer):
    code = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.FloatField()


class AbstentionSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    abstained = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True, help_text="abstained / (done + abstained)")
    reasons = ReasonCountSerializer(many=True)


class CategoryCountSerializer(serializers.Serializer):
    category = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.FloatField()


class DriftCellSerializer(serializers.Serializer):
    site = serializers.CharField(source="site_code")
    site_name = serializers.CharField()
    device = serializers.CharField()
    month = serializers.DateField()
    judged = serializers.IntegerField()
    abstained = serializers.IntegerField()
    done = serializers.IntegerField()
    with_lesion = serializers.IntegerField()
    abstention_rate = serializers.FloatField(allow_null=True)
    lesion_share = serializers.FloatField(allow_null=True)
    mean_area_mm2 = serializers.FloatField(allow_null=True)
    area_known = serializers.IntegerField()
    mean_category_probability = serializers.FloatField(allow_null=True)
    categories = CategoryCountSerializer(many=True)
    abstention_z = FiniteFloatField(
        allow_null=True, help_text="Standard errors from the overall rate; null under 10 results"
    )
    lesion_z = FiniteFloatField(allow_null=True, help_text="Standard errors from the overall share; null under 10")
    abstention_flag = serializers.BooleanField()
    lesion_flag = serializers.BooleanField()


class DriftSerializer(serializers.Serializer):
    overall_abstention_rate = serializers.FloatField(allow_null=True)
    overall_lesion_share = serializers.FloatField(allow_null=True)
    flagged = serializers.IntegerField()
    cells = DriftCellSerializer(many=True)


class HostLoadSerializer(serializers.Serializer):
    host = serializers.CharField()
    processes = serializers.IntegerField()
    finished = serializers.IntegerField()
    failed = serializers.IntegerField()
    running = serializers.IntegerField()
    mean_runtime_ms = serializers.FloatField(allow_null=True)


class DeviceLoadSerializer(serializers.Serializer):
    device = serializers.CharField()
    finished = serializers.IntegerField()
    mean_runtime_ms = serializers.FloatField(allow_null=True)


class FailureRowSerializer(serializers.Serializer):
    result = serializers.IntegerField(source="result_id")
    image = serializers.IntegerField(source="image_id")
    study_id = serializers.CharField()
    site = serializers.CharField(source="site_code")
    model = serializers.CharField()
    reason = serializers.CharField()
    attempts = serializers.IntegerField()
    finished_at = serializers.DateTimeField(allow_null=True)
    data_withdrawn = serializers.BooleanField()


class RecentResultSerializer(serializers.Serializer):
    result = serializers.IntegerField(source="result_id")
    image = serializers.IntegerField(source="image_id")
    study_id = serializers.CharField()
    site = serializers.CharField(source="site_code")
    device = serializers.CharField(help_text="Imaging device: manufacturer and model from the study's header")
    status = serializers.CharField(help_text="done or abstained")
    reason_code = serializers.CharField(help_text="Why it abstained (the reason's code); empty when done")
    category = serializers.CharField()
    category_probability = serializers.FloatField(allow_null=True)
    lesion_count = serializers.IntegerField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    data_withdrawn = serializers.BooleanField()
    files = serializers.ListField(
        child=serializers.ChoiceField(choices=["overlay", "segmentation", "mask"]),
        help_text=(
            "The files a trial admin may download from the operations page (/ai/results/<result>/<kind>/); "
            "none once the participant withdrew their data"
        ),
    )


class OperationsSerializer(serializers.Serializer):
    trial = serializers.CharField(source="trial.code")
    sites = serializers.SerializerMethodField()
    all_sites = serializers.BooleanField()
    computed_at = serializers.DateTimeField()
    window_days = serializers.IntegerField(allow_null=True)
    broker = BrokerQueueSerializer()
    outbox = serializers.IntegerField(help_text="Queued results never handed to the broker")
    stale_running = serializers.IntegerField(help_text="Running results whose lease has ended")
    statuses = StatusCountSerializer(many=True)
    total = serializers.IntegerField()
    latency = LatencySerializer(many=True)
    abstention = AbstentionSerializer()
    drift = DriftSerializer()
    hosts = HostLoadSerializer(many=True)
    devices = DeviceLoadSerializer(many=True)
    failures = FailureRowSerializer(many=True)
    recent_results = RecentResultSerializer(many=True)

    def get_sites(self, summary: Any) -> list[str]:
        return [site.code for site in summary.sites]
