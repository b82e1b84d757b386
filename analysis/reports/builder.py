"""Building one requested report: the analysis data sets the requester may
have → the CONSORT flow → the endpoints → the PDF → stored, with the
report's progress moved on at each step. Run by the Celery task
analysis.build_report; callable directly (tests, a management command)."""

from __future__ import annotations

import dataclasses
import importlib
import io
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from ai_engine.models import AiResult, AiResultStatus
from analysis import services
from analysis.checklist import consort_ai_checklist
from analysis.datasets import build_datasets
from analysis.models import Report, ReportKind
from analysis.reports.pdf import render_report
from imaging import storage
from imaging.models import Image
from imaging.storage import StoredFileCorrupt
from trial.errors import NotAllowed

log = logging.getLogger(__name__)


def build_report(report_pk: int) -> Report:
    """Build the report; a failure marks it failed with the reason (and is
    logged), never leaves it running."""
    report = Report.objects.select_related("trial", "requested_by").get(pk=report_pk)
    if report.finished:
        return report
    try:
        return _build(report)
    except NotAllowed as error:
        return services.report_fail(report, str(error))
    except Exception as error:
        log.exception("Report %s failed", report.pk)
        return services.report_fail(report, f"{type(error).__name__}: {error}")


THUMBNAIL_EDGE = 200


def interim_timing(planned_sample_size: int, analysed: int) -> list[float] | None:
    """The information times of the looks so far: the planned interim
    fractions (ANALYSIS_INTERIM_FRACTIONS) already passed, then this look's
    fraction, analysed / planned sample size (at most 1); None before anyone
    is analysed or without a planned size."""
    if planned_sample_size <= 0 or analysed <= 0:
        return None
    fraction = min(analysed / planned_sample_size, 1.0)
    planned = sorted(float(f) for f in settings.ANALYSIS_INTERIM_FRACTIONS)
    return [f for f in planned if f < fraction - 1e-9] + [fraction]


def _thumbnails(image_ids: list[int]) -> Callable[[int], bytes | None]:
    """Pictures of the error cases' images, read when the PDF draws them: the
    AI overlay (the image with the AI's mask drawn on it, verified against its
    sha256) shrunk to a thumbnail, else the image's stored thumbnail; None
    where neither can be read."""
    overlays = {
        image_id: (name, sha256)
        for image_id, name, sha256 in AiResult.objects.filter(image_id__in=image_ids, status=AiResultStatus.DONE)
        .exclude(overlay="")
        .order_by("finished_at")
        .values_list("image_id", "overlay", "overlay_sha256")
    }
    names = dict(Image.objects.filter(pk__in=image_ids).exclude(thumbnail="").values_list("pk", "thumbnail"))

    def thumbnail(image_id: int) -> bytes | None:
        if image_id in overlays:
            name, sha256 = overlays[image_id]
            try:
                with PILImage.open(io.BytesIO(storage.read_verified(name, sha256))) as picture:
                    picture.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE))
                    buffer = io.BytesIO()
                    picture.convert("RGB").save(buffer, format="PNG")
                    return buffer.getvalue()
            except (OSError, StoredFileCorrupt) as error:
                log.warning("AI overlay %s of image %s could not be used: %s", name, image_id, error)
        name = names.get(image_id)
        if not name:
            return None
        try:
            with default_storage.open(name, "rb") as handle:
                return bytes(handle.read())
        except OSError:
            log.warning("Thumbnail %s of image %s could not be read", name, image_id)
            return None

    return thumbnail


def _build(report: Report) -> Report:
    closed = report.kind == ReportKind.CLOSED
    # The requester's rights now, not when it was asked for.
    scope = services.report_scope(report.requested_by, report.trial, report.kind)
    # analysis.endpoints is imported when a report is built (it depends on
    # the statistics stack, which the web process need not load).
    endpoints = importlib.import_module("analysis.endpoints")

    services.report_progress(report, *services.REPORT_STEPS["datasets"])
    datasets = build_datasets(scope)
    data_sha256 = services.data_hash(
        {"participants.csv": datasets.participants.to_csv(), "reads.csv": datasets.reads.to_csv()}
    )
    services.report_progress(report, *services.REPORT_STEPS["consort"])
    # An open report is pooled from the first box on: its flow is counted
    # without the arm, whatever the requester may see.
    flow_scope = scope if closed else dataclasses.replace(scope, arm_mode="none", arm_labels={})
    flow = endpoints.consort_flow(report.trial, flow_scope)
    services.report_progress(report, *services.REPORT_STEPS["analyse"])
    images = endpoints.ai_images_for_errors(report.trial) if closed else None
    analysis = endpoints.analyse(
        datasets,
        closed=closed,
        consort=flow,
        images=images,
        outline_dice=endpoints.outline_dice_by_participant(report.trial),
        timing=interim_timing(report.trial.planned_sample_size, sum(flow.analysed.values())) if closed else None,
    )
    analysis.consort_ai = consort_ai_checklist(report.trial, analysis)
    services.report_progress(report, *services.REPORT_STEPS["render"])
    thumbnails = _thumbnails([case.image_id for case in analysis.errors if case.image_id is not None])
    pdf = render_report(
        analysis, requested_by=report.requested_by.get_username(), thumbnail=thumbnails if closed else None
    )
    return services.report_finish(report, pdf=pdf, data_sha256=data_sha256)
