"""The figures of the AI operations view, each from one query over the
results in scope (grouped in the database; percentiles in Python over one
window's rows), so the page costs the same whatever the number of results."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any

import numpy as np
from django.db.models import Avg, Case, Count, F, FloatField, Q, QuerySet, Sum, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, StrIndex, Substr, TruncMonth

from ai_engine.models import AiResult, AiResultStatus
from ai_engine.operations.records import (
    Abstention,
    CategoryCount,
    DeviceLoad,
    Drift,
    DriftCell,
    FailureRow,
    HostLoad,
    Latency,
    ReasonCount,
    RecentResult,
)
from trial.models import Site

WORKER_WINDOW = dt.timedelta(hours=1)
RECENT_FAILURES = 20
RECENT_RESULTS = 20
# Drift flag: a cell with at least FLAG_MIN_N results whose rate is more than
# FLAG_STANDARD_ERRORS binomial standard errors away from the overall rate.
FLAG_MIN_N = 10
FLAG_STANDARD_ERRORS = 3.0
UNKNOWN_DEVICE = "unknown device"
NO_CATEGORY = "no category"

_JUDGED = (AiResultStatus.DONE, AiResultStatus.ABSTAINED)
_FINISHED = (AiResultStatus.DONE, AiResultStatus.ABSTAINED, AiResultStatus.FAILED)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, linear between closest ranks (numpy's default)."""
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def latency(results: QuerySet[AiResult], *, windows: list[tuple[str, float]], now: dt.datetime) -> list[Latency]:
    """One query over the longest window; the shorter ones are its subsets."""
    longest = max(hours for _, hours in windows)
    rows = [
        (finished, (finished - created).total_seconds(), runtime_ms, batch_size)
        for created, finished, runtime_ms, batch_size in results.filter(
            status__in=_JUDGED, finished_at__gte=now - dt.timedelta(hours=longest)
        ).values_list("created_at", "finished_at", "runtime_ms", "batch_size")
        if finished is not None
    ]
    table = []
    for label, hours in windows:
        since = now - dt.timedelta(hours=hours)
        inside = [row for row in rows if row[0] >= since]
        seconds = [row[1] for row in inside]
        table.append(
            Latency(
                label=label,
                hours=hours,
                results=len(inside),
                mean_seconds=_mean(seconds),
                p50_seconds=percentile(seconds, 50),
                p95_seconds=percentile(seconds, 95),
                mean_runtime_ms=_mean([row[2] for row in inside if row[2] is not None]),
                mean_batch_size=_mean([float(row[3]) for row in inside if row[3] is not None]),
            )
        )
    return table


def reason_code(reason: str) -> str:
    """The stable code at the start of an abstention's reason ("blank: …" → "blank")."""
    code, colon, _ = reason.partition(":")
    return code.strip() if colon and code.strip() else "other"


def abstention(results: QuerySet[AiResult], *, done: int, abstained: int) -> Abstention:
    """The abstention rate and its reasons by code, the code cut in the database."""
    rows = (
        results.filter(status=AiResultStatus.ABSTAINED)
        .annotate(colon=StrIndex("reason", Value(":")))
        .annotate(code=Case(When(colon__gt=1, then=Substr("reason", 1, F("colon") - 1)), default=Value("")))
        .values("code")
        .annotate(count=Count("id"))
        .order_by()
    )
    by_code: dict[str, int] = defaultdict(int)
    for row in rows:
        by_code[row["code"].strip() or "other"] += row["count"]
    reasons = [
        ReasonCount(code, count, count / abstained if abstained else 0.0)
        for code, count in sorted(by_code.items(), key=lambda item: (-item[1], item[0]))
    ]
    judged = done + abstained
    return Abstention(done=done, abstained=abstained, rate=abstained / judged if judged else None, reasons=reasons)


def device_label(manufacturer: str, model: str) -> str:
    return " ".join(part.strip() for part in (manufacturer, model) if part.strip()) or UNKNOWN_DEVICE


def z_score(rate: float, overall: float, n: int) -> float | None:
    """(rate − overall) in binomial standard errors of the overall rate for n
    results; None below FLAG_MIN_N. An overall rate of 0 or 1 has no spread:
    any difference is infinitely far."""
    if n < FLAG_MIN_N:
        return None
    difference = rate - overall
    error = math.sqrt(overall * (1.0 - overall) / n)
    if error == 0.0:
        return 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
    return difference / error


def _flagged(z: float | None) -> bool:
    return z is not None and abs(z) > FLAG_STANDARD_ERRORS


def drift(results: QuerySet[AiResult], *, sites: list[Site]) -> Drift:
    """Per site × device model × calendar month of creation: two grouped
    queries (figures, then the category distribution)."""
    done = Q(status=AiResultStatus.DONE)
    # An area is known when the key holds a number: JSON null (no pixel
    # spacing) would read as 0 once cast on SQLite.
    area_known = done & Q(measurements__has_key="total_area_mm2") & ~Q(measurements__total_area_mm2=None)
    base = (
        results.filter(status__in=_JUDGED)
        .alias(
            lesions=Cast(KeyTextTransform("lesion_count", "measurements"), FloatField()),
            area=Cast(KeyTextTransform("total_area_mm2", "measurements"), FloatField()),
        )
        .annotate(
            manufacturer=Coalesce("image__study__device_manufacturer", Value("")),
            model=Coalesce("image__study__device_model", Value("")),
            month=TruncMonth("created_at"),
        )
        .order_by()
    )
    cell_key = ("image__site_id", "manufacturer", "model", "month")
    figures = base.values(*cell_key).annotate(
        judged=Count("id"),
        abstained=Count("id", filter=Q(status=AiResultStatus.ABSTAINED)),
        done=Count("id", filter=done),
        with_lesion=Count("id", filter=done & Q(lesions__gt=0)),
        mean_area=Avg("area", filter=area_known),
        area_known=Count("id", filter=area_known),
        mean_probability=Avg("category_probability", filter=done),
    )
    categories: dict[tuple[Any, ...], list[tuple[str, int]]] = defaultdict(list)
    for row in base.filter(done).values(*cell_key, "category").annotate(count=Count("id")):
        key = tuple(row[name] for name in cell_key)
        categories[key].append((row["category"] or NO_CATEGORY, row["count"]))
    rows = list(figures)
    judged = sum(row["judged"] for row in rows)
    done_total = sum(row["done"] for row in rows)
    overall_abstention = sum(row["abstained"] for row in rows) / judged if judged else None
    overall_lesion = sum(row["with_lesion"] for row in rows) / done_total if done_total else None
    site_of = {site.pk: site for site in sites}
    cells = []
    for row in rows:
        key = tuple(row[name] for name in cell_key)
        site = site_of[row["image__site_id"]]
        abstention_rate = row["abstained"] / row["judged"] if row["judged"] else None
        lesion_share = row["with_lesion"] / row["done"] if row["done"] else None
        abstention_z = (
            z_score(abstention_rate, overall_abstention, row["judged"])
            if abstention_rate is not None and overall_abstention is not None
            else None
        )
        lesion_z = (
            z_score(lesion_share, overall_lesion, row["done"])
            if lesion_share is not None and overall_lesion is not None
            else None
        )
        counted = sorted(categories.get(key, []), key=lambda item: (-item[1], item[0]))
        cells.append(
            DriftCell(
                site_code=site.code,
                site_name=site.name,
                device=device_label(row["manufacturer"], row["model"]),
                month=row["month"].date(),
                judged=row["judged"],
                abstained=row["abstained"],
                done=row["done"],
                with_lesion=row["with_lesion"],
                abstention_rate=abstention_rate,
                lesion_share=lesion_share,
                mean_area_mm2=row["mean_area"],
                area_known=row["area_known"],
                mean_category_probability=row["mean_probability"],
                categories=[CategoryCount(name, count, count / row["done"]) for name, count in counted],
                abstention_z=abstention_z,
                lesion_z=lesion_z,
                abstention_flag=_flagged(abstention_z),
                lesion_flag=_flagged(lesion_z),
            )
        )
    cells.sort(key=lambda cell: (cell.site_code, cell.device, cell.month))
    return Drift(overall_abstention_rate=overall_abstention, overall_lesion_share=overall_lesion, cells=cells)


def hosts(results: QuerySet[AiResult], *, now: dt.datetime) -> list[HostLoad]:
    """Results finished in the last hour, and those running now, by worker
    machine (one row per host:pid from the database, merged by host here)."""
    finished = Q(status__in=_FINISHED, finished_at__gte=now - WORKER_WINDOW)
    rows = (
        results.filter(finished | Q(status=AiResultStatus.RUNNING))
        .values("claimed_by")
        .order_by()
        .annotate(
            finished=Count("id", filter=finished),
            failed=Count("id", filter=finished & Q(status=AiResultStatus.FAILED)),
            running=Count("id", filter=Q(status=AiResultStatus.RUNNING)),
            runtime_sum=Sum("runtime_ms", filter=finished),
            runtime_n=Count("runtime_ms", filter=finished),
        )
    )
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        host = row["claimed_by"].rpartition(":")[0] or row["claimed_by"] or "(not claimed)"
        into = merged.setdefault(
            host, {"processes": 0, "finished": 0, "failed": 0, "running": 0, "runtime_sum": 0.0, "runtime_n": 0}
        )
        into["processes"] += 1 if row["claimed_by"] else 0
        for name in ("finished", "failed", "running", "runtime_n"):
            into[name] += row[name]
        into["runtime_sum"] += row["runtime_sum"] or 0.0
    return [
        HostLoad(
            host=host,
            processes=values["processes"],
            finished=values["finished"],
            failed=values["failed"],
            running=values["running"],
            mean_runtime_ms=values["runtime_sum"] / values["runtime_n"] if values["runtime_n"] else None,
        )
        for host, values in sorted(merged.items())
    ]


def devices(results: QuerySet[AiResult], *, now: dt.datetime) -> list[DeviceLoad]:
    """Results judged in the last hour by the device that ran the model
    (cpu, cuda, or "cpu (fallback: …)" when the GPU was unusable)."""
    rows = (
        results.filter(status__in=_JUDGED, finished_at__gte=now - WORKER_WINDOW)
        .values("device")
        .annotate(finished=Count("id"), mean_runtime=Avg("runtime_ms"))
        .order_by("device")
    )
    return [DeviceLoad(row["device"] or "—", row["finished"], row["mean_runtime"]) for row in rows]


def failures(results: QuerySet[AiResult]) -> list[FailureRow]:
    rows = (
        results.filter(status=AiResultStatus.FAILED)
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .values_list(
            "id",
            "image_id",
            "image__participant__study_id",
            "image__site__code",
            "model_version__name",
            "model_version__version",
            "reason",
            "attempts",
            "finished_at",
            "image__participant__data_withdrawn",
        )[:RECENT_FAILURES]
    )
    return [
        FailureRow(
            result_id=pk,
            image_id=image_id,
            study_id=study_id,
            site_code=site_code,
            model=f"{name} {version}",
            reason=reason,
            attempts=attempts,
            finished_at=finished_at,
            data_withdrawn=withdrawn,
        )
        for pk, image_id, study_id, site_code, name, version, reason, attempts, finished_at, withdrawn in rows
    ]


def recent_results(results: QuerySet[AiResult]) -> list[RecentResult]:
    """The RECENT_RESULTS most recently finished results judged (done or
    abstained), in one query; the arm is not read."""
    rows = (
        results.filter(status__in=_JUDGED)
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .values_list(
            "id",
            "image_id",
            "image__participant__study_id",
            "image__site__code",
            "image__study__device_manufacturer",
            "image__study__device_model",
            "status",
            "reason",
            "category",
            "category_probability",
            "measurements__lesion_count",
            "finished_at",
            "image__participant__data_withdrawn",
            "overlay",
            "segmentation",
            "mask",
        )[:RECENT_RESULTS]
    )
    return [
        RecentResult(
            result_id=pk,
            image_id=image_id,
            study_id=study_id,
            site_code=site_code,
            device=device_label(manufacturer or "", model or ""),
            status=status,
            reason_code=reason_code(reason) if status == AiResultStatus.ABSTAINED else "",
            category=category,
            category_probability=probability,
            lesion_count=_whole_number(lesions),
            finished_at=finished_at,
            data_withdrawn=withdrawn,
            has_overlay=bool(overlay),
            has_segmentation=bool(segmentation),
            has_mask=bool(mask),
        )
        for (
            pk,
            image_id,
            study_id,
            site_code,
            manufacturer,
            model,
            status,
            reason,
            category,
            probability,
            lesions,
            finished_at,
            withdrawn,
            overlay,
            segmentation,
            mask,
        ) in rows
    ]


def _whole_number(value: Any) -> int | None:
    """A count read from JSON: a number, or None (absent, null, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)
