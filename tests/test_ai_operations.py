"""The AI operations view for trial admins: queue and outbox, jobs by status,
latency, abstentions by reason, drift of the AI's outputs per site, device
and month, workers and devices of the last hour, recent failures. Every
figure is checked against values worked out by hand; only trial admins see
it, each within their sites; the randomization arm never appears."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from ai_engine import operations, services
from ai_engine.inference import InferenceResult
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from ai_engine.tasks import run_inference
from imaging import services as imaging_services
from imaging.models import Image
from randomization.models import Allocation, Arm
from tests.ai_fixtures import make_images
from tests.celery_worker import publishing_to
from tests.conftest import SYSTEM, actor_for, api_client, login
from tests.imaging_files import other_trial_participant, randomized, ultrasound_dicom
from trial import services as trial_services
from trial.errors import RuleViolation
from trial.models import Indication, Participant, Role, Site, Trial

UTC = dt.UTC
ARM_TEXTS = [Arm.AI_ASSISTED.label, Arm.SPECIALIST_ONLY.label, Arm.AI_ASSISTED.value, Arm.SPECIALIST_ONLY.value]


def page_url(code: str = "CONSILIUM") -> str:
    return reverse("ai_engine:operations", args=[code])


# --- Building results -----------------------------------------------------------------


@pytest.fixture
def model_version(db: Any) -> ModelVersion:
    return services.model_register(
        actor=services.AI_ENGINE,
        path=services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )


def add_results(model_version: ModelVersion, images: list[Image], specs: list[dict[str, Any]]) -> list[AiResult]:
    """One result per image with the given fields; created_at is set after
    the insert (the column fills itself with the current time on insert)."""
    assert len(images) == len(specs)
    rows = [
        AiResult(image=image, model_version=model_version, **{k: v for k, v in spec.items() if k != "created_at"})
        for image, spec in zip(images, specs, strict=True)
    ]
    created = AiResult.objects.bulk_create(rows)
    for row, spec in zip(created, specs, strict=True):
        row.created_at = spec["created_at"]
    AiResult.objects.bulk_update(created, ["created_at"])
    return created


def judged(
    status: str,
    created_at: dt.datetime,
    *,
    lesions: int = 0,
    area: float | None = None,
    category: str = "",
    probability: float | None = None,
    reason: str = "",
    latency_s: float = 60.0,
    **fields: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "status": status,
        "created_at": created_at,
        "finished_at": created_at + dt.timedelta(seconds=latency_s),
        "reason": reason,
        **fields,
    }
    if status == AiResultStatus.DONE:
        spec.update(
            measurements={"lesion_count": lesions, "total_area_px": lesions * 100, "total_area_mm2": area},
            category=category,
            category_probability=probability,
            quality={"ok": True, "reason": "", "figures": {}},
        )
    return spec


def at(year: int, month: int, day: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, 8, 0, tzinfo=UTC) + dt.timedelta(minutes=minute)


@pytest.fixture
def drift_world(
    users: dict[str, Any],
    coordinator: Any,
    coordinator_b: Any,
    site_a: Site,
    site_b: Site,
    enroll: Callable[..., Participant],
    model_version: ModelVersion,
) -> SimpleNamespace:
    """Results in the past, by hand:

    cell  site  device        month    judged  abstained  done  with lesion
    C1    C01   Acme US-1     2025-01  40      4          36    6
    C2    C01   Acme US-1     2025-02  40      4          36    30
    C3    C02   unknown       2025-01  20      12         8     4
    C4    C02   Zeta          2025-02  5       0          5     5

    and, at C01, 3 queued (2 never dispatched), 2 running (1 lease ended),
    1 failed, 1 cancelled; at C02, 1 failed."""
    pa = enroll(indication=Indication.THYROID)
    pb = enroll(site=site_b, user=coordinator_b, indication=Indication.THYROID)
    acme = ("Acme", "US-1")
    c1 = [
        judged(AiResultStatus.ABSTAINED, at(2025, 1, 10, i), reason=r)
        for i, r in enumerate(
            ["blank: contrast 0.4", "blank: contrast 0.2", "blank: contrast 0.1", "blurred: sharpness 1.5"]
        )
    ]
    c1 += [
        judged(
            AiResultStatus.DONE,
            at(2025, 1, 10, 10 + i),
            lesions=1,
            area=10.0 * (i + 1),
            category="suspicious",
            probability=0.6,
        )
        for i in range(6)
    ]
    c1 += [
        judged(AiResultStatus.DONE, at(2025, 1, 11, i), area=0.0, category="benign", probability=0.8) for i in range(20)
    ]
    c1 += [
        judged(AiResultStatus.DONE, at(2025, 1, 12, i), area=None, category="benign", probability=0.8)
        for i in range(10)
    ]
    c2 = [judged(AiResultStatus.ABSTAINED, at(2025, 2, 10, i), reason="too-small: 20 × 20 px") for i in range(4)]
    c2 += [
        judged(
            AiResultStatus.DONE, at(2025, 2, 10, 10 + i), lesions=2, area=5.0, category="suspicious", probability=0.7
        )
        for i in range(30)
    ]
    c2 += [
        judged(AiResultStatus.DONE, at(2025, 2, 11, i), area=0.0, category="benign", probability=0.9) for i in range(6)
    ]
    add_results(model_version, make_images(pa, 80, device=acme, uploader=coordinator), c1 + c2)
    c3_reasons = ["blank: uniform"] * 6 + ["wrong-modality: a photograph"] * 5 + ["the image could not be judged"]
    c3 = [judged(AiResultStatus.ABSTAINED, at(2025, 1, 20, i), reason=r) for i, r in enumerate(c3_reasons)]
    c3 += [judged(AiResultStatus.DONE, at(2025, 1, 20, 20 + i), lesions=1 if i < 4 else 0) for i in range(8)]
    # Half of C3 has no study, half a study naming no device: both are "unknown device".
    c3_images = make_images(pb, 10, device=None, uploader=coordinator_b)
    c3_images += make_images(pb, 10, device=("", ""), uploader=coordinator_b)
    add_results(model_version, c3_images, c3)
    c4 = [
        judged(AiResultStatus.DONE, at(2025, 2, 20, i), lesions=3, area=7.0, category="suspicious", probability=0.5)
        for i in range(5)
    ]
    add_results(model_version, make_images(pb, 5, device=("Zeta", ""), uploader=coordinator_b), c4)

    now = timezone.now()
    march = at(2025, 3, 5)
    pending = [
        {"status": AiResultStatus.QUEUED, "created_at": march},
        {"status": AiResultStatus.QUEUED, "created_at": march},
        {"status": AiResultStatus.QUEUED, "created_at": march, "dispatched_at": march},
        {
            "status": AiResultStatus.RUNNING,
            "created_at": march,
            "claimed_by": "gpu-9:1",
            "lease_expires_at": now - dt.timedelta(minutes=1),
            "dispatched_at": march,
        },
        {
            "status": AiResultStatus.RUNNING,
            "created_at": march,
            "claimed_by": "gpu-9:2",
            "lease_expires_at": now + dt.timedelta(minutes=9),
            "dispatched_at": march,
        },
        {
            "status": AiResultStatus.FAILED,
            "created_at": march,
            "finished_at": at(2025, 3, 5, 120),
            "attempts": 1,
            "reason": "bad-input: the stored image does not decode (truncated)",
        },
        {"status": AiResultStatus.CANCELLED, "created_at": march, "reason": "The participant withdrew"},
    ]
    pending_a = add_results(model_version, make_images(pa, 7, device=acme, uploader=coordinator), pending)
    failed_b = add_results(
        model_version,
        make_images(pb, 1, device=("Zeta", ""), uploader=coordinator_b),
        [
            {
                "status": AiResultStatus.FAILED,
                "created_at": march,
                "finished_at": at(2025, 3, 6),
                "attempts": 6,
                "reason": "failed after retries: OperationalError: database down",
            }
        ],
    )
    return SimpleNamespace(pa=pa, pb=pb, failed_a=pending_a[5], failed_b=failed_b[0], users=users)


@pytest.fixture
def recent_world(
    users: dict[str, Any], coordinator: Any, enroll: Callable[..., Participant], model_version: ModelVersion
) -> SimpleNamespace:
    """Results around now, for latency, workers and devices (latencies in s):

    r1 done 10 (5 min ago, gpu-1:100, cuda, 100 ms, batch 1)
    r2 done 20 (20 min ago, gpu-1:101, cpu fallback, 200 ms, batch 2)
    r3 abstained 30 (5 h ago, gpu-2:7, 300 ms, batch 2)    r4 done 100 (6 h ago, gpu-2:7, batch 3)
    r5 done 1000 (10 days ago, 400 ms, batch 4)             r6 abstained 2000 (12 days ago, 500 ms, batch 4)
    r7 done 5 (40 days ago, 50 ms, batch 1)
    r8 failed 30 min ago (gpu-2:7)                          r9 running now (gpu-2:8)"""
    participant = enroll(indication=Indication.THYROID)
    now = timezone.now()

    def finished(status: str, ago: dt.timedelta, latency_s: float, **fields: Any) -> dict[str, Any]:
        end = now - ago
        return judged(status, end - dt.timedelta(seconds=latency_s), latency_s=latency_s, **fields)

    minutes, hours, days = (lambda n: dt.timedelta(minutes=n)), (lambda n: dt.timedelta(hours=n)), dt.timedelta
    fallback = "cpu (fallback: CUDA out of memory)"
    specs = [
        finished(
            AiResultStatus.DONE, minutes(5), 10, runtime_ms=100.0, batch_size=1, claimed_by="gpu-1:100", device="cuda"
        ),
        finished(
            AiResultStatus.DONE,
            minutes(20),
            20,
            runtime_ms=200.0,
            batch_size=2,
            claimed_by="gpu-1:101",
            device=fallback,
        ),
        finished(
            AiResultStatus.ABSTAINED,
            hours(5),
            30,
            runtime_ms=300.0,
            batch_size=2,
            claimed_by="gpu-2:7",
            device="cuda",
            reason="blank: uniform",
        ),
        finished(
            AiResultStatus.DONE, hours(6), 100, runtime_ms=None, batch_size=3, claimed_by="gpu-2:7", device="cuda"
        ),
        finished(
            AiResultStatus.DONE, days(10), 1000, runtime_ms=400.0, batch_size=4, claimed_by="gpu-3:1", device="cuda"
        ),
        finished(
            AiResultStatus.ABSTAINED,
            days(12),
            2000,
            runtime_ms=500.0,
            batch_size=4,
            claimed_by="gpu-3:1",
            device="cuda",
            reason="blurred: soft",
        ),
        finished(AiResultStatus.DONE, days(40), 5, runtime_ms=50.0, batch_size=1, claimed_by="gpu-3:1", device="cuda"),
        {
            "status": AiResultStatus.FAILED,
            "created_at": now - minutes(40),
            "finished_at": now - minutes(30),
            "claimed_by": "gpu-2:7",
            "attempts": 2,
            "reason": "transient: OSError: disk",
        },
        {
            "status": AiResultStatus.RUNNING,
            "created_at": now - minutes(2),
            "started_at": now - minutes(1),
            "claimed_by": "gpu-2:8",
            "lease_expires_at": now + minutes(10),
            "dispatched_at": now - minutes(2),
        },
    ]
    add_results(
        model_version, make_images(participant, len(specs), device=("Acme", "US-1"), uploader=coordinator), specs
    )
    return SimpleNamespace(now=now, admin=users[Role.TRIAL_ADMIN])


def summary(user: Any, **options: Any) -> operations.Operations:
    return operations.operations_summary(user, trial_code="CONSILIUM", **options)


def cells_by_key(ops: operations.Operations) -> dict[tuple[str, str, str], operations.DriftCell]:
    return {(cell.site_code, cell.device, cell.month.strftime("%Y-%m")): cell for cell in ops.drift.cells}


# --- Figures ----------------------------------------------------------------------------


def test_jobs_by_status_the_outbox_and_stale_leases_are_counted(drift_world: SimpleNamespace) -> None:
    ops = summary(drift_world.users[Role.TRIAL_ADMIN])
    assert {row.status: row.count for row in ops.statuses} == {
        "queued": 3,
        "running": 2,
        "done": 85,
        "failed": 2,
        "abstained": 20,
        "cancelled": 1,
    }
    assert [row.status for row in ops.statuses] == AiResultStatus.values and ops.total == 113
    assert ops.outbox == 2 and ops.stale_running == 1
    assert ops.all_sites and [site.code for site in ops.sites] == ["C01", "C02"]


def test_the_abstention_rate_and_its_reason_codes(drift_world: SimpleNamespace) -> None:
    abstention = summary(drift_world.users[Role.TRIAL_ADMIN]).abstention
    assert (abstention.done, abstention.abstained, abstention.judged) == (85, 20, 105)
    assert abstention.rate == pytest.approx(20 / 105)
    assert [(reason.code, reason.count) for reason in abstention.reasons] == [
        ("blank", 9),
        ("wrong-modality", 5),
        ("too-small", 4),
        ("blurred", 1),
        ("other", 1),
    ]
    assert [reason.share for reason in abstention.reasons] == pytest.approx([0.45, 0.25, 0.2, 0.05, 0.05])


def test_reason_codes_are_the_text_before_the_first_colon() -> None:
    assert operations.reason_code("blank: contrast 0.1: very low") == "blank"
    assert operations.reason_code("too-small:8 px") == "too-small"
    assert operations.reason_code("no code here") == "other"
    assert operations.reason_code(": starts with a colon") == "other"


def test_drift_cells_by_site_device_and_month(drift_world: SimpleNamespace) -> None:
    drift = summary(drift_world.users[Role.TRIAL_ADMIN]).drift
    assert drift.overall_abstention_rate == pytest.approx(20 / 105)
    assert drift.overall_lesion_share == pytest.approx(45 / 85)
    cells = cells_by_key(summary(drift_world.users[Role.TRIAL_ADMIN]))
    assert list(cells) == [
        ("C01", "Acme US-1", "2025-01"),
        ("C01", "Acme US-1", "2025-02"),
        ("C02", "Zeta", "2025-02"),
        ("C02", "unknown device", "2025-01"),
    ]
    c1, c2 = cells[("C01", "Acme US-1", "2025-01")], cells[("C01", "Acme US-1", "2025-02")]
    c3, c4 = cells[("C02", "unknown device", "2025-01")], cells[("C02", "Zeta", "2025-02")]
    assert c1.month == dt.date(2025, 1, 1) and c1.site_name == "Site A"
    assert [(c.judged, c.abstained, c.done, c.with_lesion) for c in (c1, c2, c3, c4)] == [
        (40, 4, 36, 6),
        (40, 4, 36, 30),
        (20, 12, 8, 4),
        (5, 0, 5, 5),
    ]
    assert [c.abstention_rate for c in (c1, c2, c3, c4)] == pytest.approx([0.1, 0.1, 0.6, 0.0])
    assert [c.lesion_share for c in (c1, c2, c3, c4)] == pytest.approx([1 / 6, 30 / 36, 0.5, 1.0])
    # Area in mm² where known: C1 has 6 lesions of 10..60 mm², 20 results of 0 mm², 10 without spacing.
    assert (c1.mean_area_mm2, c1.area_known) == (pytest.approx(210 / 26), 26)
    assert (c2.mean_area_mm2, c2.area_known) == (pytest.approx(150 / 36), 36)
    assert (c3.mean_area_mm2, c3.area_known) == (None, 0)
    assert (c4.mean_area_mm2, c4.area_known) == (pytest.approx(7.0), 5)
    assert c1.mean_category_probability == pytest.approx((6 * 0.6 + 30 * 0.8) / 36)
    assert c2.mean_category_probability == pytest.approx((30 * 0.7 + 6 * 0.9) / 36)
    assert c3.mean_category_probability is None and c4.mean_category_probability == pytest.approx(0.5)
    assert [(k.category, k.count) for k in c1.categories] == [("benign", 30), ("suspicious", 6)]
    assert [(k.category, k.count) for k in c2.categories] == [("suspicious", 30), ("benign", 6)]
    assert [(k.category, k.count, k.share) for k in c3.categories] == [("no category", 8, 1.0)]
    assert [(k.category, k.count) for k in c4.categories] == [("suspicious", 5)]


def test_drift_flags_cells_more_than_three_standard_errors_away(drift_world: SimpleNamespace) -> None:
    cells = cells_by_key(summary(drift_world.users[Role.TRIAL_ADMIN]))
    c1, c2 = cells[("C01", "Acme US-1", "2025-01")], cells[("C01", "Acme US-1", "2025-02")]
    c3, c4 = cells[("C02", "unknown device", "2025-01")], cells[("C02", "Zeta", "2025-02")]
    # Abstention: overall p = 20/105; C1: (0.1 − p) / √(p(1 − p)/40) = −1.457; C3: (0.6 − p) / √(p(1 − p)/20) = 4.664.
    assert c1.abstention_z == pytest.approx(-1.4572, abs=1e-3) and not c1.abstention_flag
    assert c2.abstention_z == pytest.approx(-1.4572, abs=1e-3) and not c2.abstention_flag
    assert c3.abstention_z == pytest.approx(4.6640, abs=1e-3) and c3.abstention_flag
    # Lesion share: overall q = 45/85; C1: (1/6 − q) / √(q(1 − q)/36) = −4.360; C2: (30/36 − q) / … = 3.653.
    assert c1.lesion_z == pytest.approx(-4.3605, abs=1e-3) and c1.lesion_flag
    assert c2.lesion_z == pytest.approx(3.6534, abs=1e-3) and c2.lesion_flag
    # Fewer than 10 results: never flagged (C3 has 8 done, C4 5 judged).
    assert c3.lesion_z is None and not c3.lesion_flag
    assert c4.abstention_z is None and c4.lesion_z is None and not (c4.abstention_flag or c4.lesion_flag)
    assert summary(drift_world.users[Role.TRIAL_ADMIN]).drift.flagged == 3


def test_a_rate_of_zero_overall_flags_any_difference() -> None:
    assert operations.z_score(0.0, 0.0, 10) == 0.0
    assert operations.z_score(0.1, 0.0, 10) == float("inf")
    assert operations.z_score(0.1, 0.0, 9) is None


def test_the_most_recent_failures_with_their_participant_and_site(
    drift_world: SimpleNamespace, model_version: ModelVersion
) -> None:
    failures = summary(drift_world.users[Role.TRIAL_ADMIN]).failures
    assert [
        (f.result_id, f.image_id, f.study_id, f.site_code, f.attempts, f.reason, f.model, f.data_withdrawn)
        for f in failures
    ] == [
        (
            drift_world.failed_b.pk,
            drift_world.failed_b.image_id,
            drift_world.pb.study_id,
            "C02",
            6,
            "failed after retries: OperationalError: database down",
            "combined-thyroid-synthetic 1.0",
            False,
        ),
        (
            drift_world.failed_a.pk,
            drift_world.failed_a.image_id,
            drift_world.pa.study_id,
            "C01",
            1,
            "bad-input: the stored image does not decode (truncated)",
            "combined-thyroid-synthetic 1.0",
            False,
        ),
    ]
    assert failures[0].finished_at == at(2025, 3, 6)


def test_only_the_twenty_most_recent_failures_are_listed(
    users: dict[str, Any], coordinator: Any, enroll: Callable[..., Participant], model_version: ModelVersion
) -> None:
    participant = enroll(indication=Indication.THYROID)
    specs = [
        {
            "status": AiResultStatus.FAILED,
            "created_at": at(2025, 5, 1),
            "finished_at": at(2025, 5, 1, i),
            "attempts": 1,
            "reason": f"bad-input: case {i}",
        }
        for i in range(25)
    ]
    add_results(model_version, make_images(participant, 25, device=None, uploader=coordinator), specs)
    failures = summary(users[Role.TRIAL_ADMIN]).failures
    assert [f.reason for f in failures] == [f"bad-input: case {i}" for i in range(24, 4, -1)]


def test_latency_in_each_window(recent_world: SimpleNamespace) -> None:
    ops = summary(recent_world.admin, now=recent_world.now, window_days=60)
    day, month, chosen = ops.latency
    assert (day.label, day.results, month.label, month.results) == ("last 24 h", 4, "last 30 days", 6)
    assert (chosen.label, chosen.results) == ("last 60 days (chosen)", 7)
    # 24 h: 10, 20, 30, 100 s.
    assert (day.mean_seconds, day.p50_seconds, day.p95_seconds) == pytest.approx((40.0, 25.0, 89.5))
    assert (day.mean_runtime_ms, day.mean_batch_size) == pytest.approx((200.0, 2.0))
    # 30 days: and 1000, 2000 s.
    assert (month.mean_seconds, month.p50_seconds, month.p95_seconds) == pytest.approx((3160 / 6, 65.0, 1750.0))
    assert (month.mean_runtime_ms, month.mean_batch_size) == pytest.approx((300.0, 16 / 6))
    # 60 days: and 5 s.
    assert (chosen.mean_seconds, chosen.p50_seconds, chosen.p95_seconds) == pytest.approx((3165 / 7, 30.0, 1700.0))
    assert (chosen.mean_runtime_ms, chosen.mean_batch_size) == pytest.approx((1550 / 6, 17 / 7))


def test_an_empty_window_has_no_figures(users: dict[str, Any]) -> None:
    day = summary(users[Role.TRIAL_ADMIN]).latency[0]
    assert (day.results, day.mean_seconds, day.p50_seconds, day.p95_seconds, day.mean_runtime_ms) == (
        0,
        None,
        None,
        None,
        None,
    )


def test_a_window_outside_its_bounds_is_refused(users: dict[str, Any]) -> None:
    for days in (0, operations.MAX_WINDOW_DAYS + 1):
        with pytest.raises(RuleViolation, match="1 to 731 days"):
            summary(users[Role.TRIAL_ADMIN], window_days=days)


def test_workers_and_devices_of_the_last_hour(recent_world: SimpleNamespace) -> None:
    ops = summary(recent_world.admin, now=recent_world.now)
    assert ops.hosts == [
        operations.HostLoad(host="gpu-1", processes=2, finished=2, failed=0, running=0, mean_runtime_ms=150.0),
        operations.HostLoad(host="gpu-2", processes=2, finished=1, failed=1, running=1, mean_runtime_ms=None),
    ]
    assert ops.devices == [
        operations.DeviceLoad("cpu (fallback: CUDA out of memory)", 1, 200.0),
        operations.DeviceLoad("cuda", 1, 100.0),
    ]


def test_percentiles_interpolate_between_ranks() -> None:
    assert operations.percentile([10.0, 20.0, 30.0, 100.0], 95) == pytest.approx(89.5)
    assert operations.percentile([7.0], 50) == 7.0
    assert operations.percentile([], 50) is None


# --- The page ---------------------------------------------------------------------------


def test_the_page_shows_the_figures_and_refreshes_itself(drift_world: SimpleNamespace) -> None:
    response = login(drift_world.users[Role.TRIAL_ADMIN]).get(page_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta http-equiv="refresh" content="15">' in html
    assert "<script>" not in html  # no inline script (CSP)
    assert "Computed " in html and " UTC; the page refreshes every 15 s" in html
    assert "Abstention rate <strong>19.0 %</strong>: 20 abstained of 105 judged" in html
    assert "<strong>2</strong> queued results waiting for the broker" in html
    assert html.count(">flagged</span>") == 3
    assert "3 rows flagged" in html
    assert "by more than 3 standard errors" in html and "rows with n under 10 are not flagged" in html
    assert "benign 30 (83 %), suspicious 6 (17 %)" in html
    assert "bad-input: the stored image does not decode (truncated)" in html
    assert drift_world.pb.study_id in html
    assert f'href="{reverse("imaging:image_detail", args=[drift_world.failed_a.image_id])}"' in html


def test_the_page_reads_a_constant_number_of_queries(
    users: dict[str, Any], coordinator: Any, enroll: Callable[..., Participant], model_version: ModelVersion
) -> None:
    admin = users[Role.TRIAL_ADMIN]
    participant = enroll(indication=Indication.THYROID)
    add_results(
        model_version,
        make_images(participant, 1, device=None, uploader=coordinator),
        [judged(AiResultStatus.DONE, timezone.now() - dt.timedelta(hours=1), lesions=1, area=3.0)],
    )

    def queries() -> int:
        client = login(admin)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(page_url(), {"days": "400"}).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    # Many more results, over many sites × devices × months, in every status.
    now = timezone.now()
    specs = []
    for i in range(120):
        status = [AiResultStatus.DONE, AiResultStatus.ABSTAINED, AiResultStatus.FAILED][i % 3]
        specs.append(
            judged(
                status,
                now - dt.timedelta(days=3 * i, minutes=i),
                lesions=i % 2,
                area=float(i),
                category="benign",
                probability=0.5,
                reason="blank: x",
                claimed_by=f"h{i % 4}:{i}",
                device="cuda",
                runtime_ms=10.0,
                batch_size=2,
            )
        )
    images: list[Image] = []
    for device in [("A", "1"), ("B", "2"), None, ("C", "")]:
        images += make_images(participant, 30, device=device, uploader=coordinator)
    add_results(model_version, images, specs)
    many = queries()
    assert many == few <= 20


def test_a_chosen_window_is_added_and_a_bad_one_explained(recent_world: SimpleNamespace) -> None:
    client = login(recent_world.admin)
    html = client.get(page_url(), {"days": "60"}).content.decode()
    assert "last 60 days (chosen)" in html
    response = client.get(page_url(), {"days": "0"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Ensure this value is greater than or equal to 1." in html and "last 24 h" in html
    assert "(chosen)" not in html


# --- The broker -------------------------------------------------------------------------


def test_the_broker_queue_counts_waiting_jobs(redis_broker: str) -> None:
    empty = operations.broker_queue()
    assert (empty.waiting, empty.error) == (0, "") and "nothing waits" in empty.note
    for result_id in (1, 2, 3):
        run_inference.apply_async((result_id,))
    assert operations.broker_queue() == operations.BrokerQueue("inference", 3)


def test_a_broker_that_does_not_answer_is_reported_on_the_page(users: dict[str, Any]) -> None:
    client = login(users[Role.TRIAL_ADMIN])
    with publishing_to("redis://127.0.0.1:1/0"):
        started = time.monotonic()
        response = client.get(page_url())
        elapsed = time.monotonic() - started
        broker = operations.broker_queue()
    assert response.status_code == 200 and elapsed < 10
    assert broker.waiting is None and "Connection refused" in broker.error
    assert f"broker unreachable: {broker.error}" in response.content.decode()


# --- Who sees it ------------------------------------------------------------------------


def test_only_the_trial_admin_opens_the_page(users: dict[str, Any]) -> None:
    for role, user in users.items():
        client = login(user)
        page, index = client.get(page_url()), client.get(reverse("ai_engine:operations_index"))
        if role == Role.TRIAL_ADMIN:
            assert page.status_code == 200, role
            assert index.status_code == 302 and index["Location"] == page_url()
        else:
            assert (page.status_code, index.status_code) == (403, 403), role


def test_the_menu_offers_the_page_to_trial_admins_only(users: dict[str, Any]) -> None:
    link = f'href="{reverse("ai_engine:operations_index")}"'
    for role, user in users.items():
        html = login(user).get(reverse("trial:dashboard")).content.decode()
        assert (link in html) == (role == Role.TRIAL_ADMIN), role


def test_anonymous_visitors_are_sent_to_the_login(db: Any) -> None:
    response = Client().get(page_url())
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_trial_the_admin_does_not_administer_is_not_found(
    users: dict[str, Any], make_user: Callable[..., Any]
) -> None:
    assert login(users[Role.TRIAL_ADMIN]).get(page_url("NO-SUCH-TRIAL")).status_code == 404
    other_participant, _ = other_trial_participant(make_user)
    other_admin = make_user("admin-other", Role.TRIAL_ADMIN, trial=other_participant.trial)
    client = login(other_admin)
    assert client.get(page_url()).status_code == 404
    index = client.get(reverse("ai_engine:operations_index"))
    assert index.status_code == 302 and index["Location"] == page_url("OTHER")


def test_an_admin_of_two_trials_picks_one(users: dict[str, Any], make_user: Callable[..., Any]) -> None:
    admin = users[Role.TRIAL_ADMIN]
    other_participant, _ = other_trial_participant(make_user)
    trial_services.membership_grant(
        actor=SYSTEM, user=admin, trial=other_participant.trial, role=Role.TRIAL_ADMIN, site=None
    )
    client = login(admin)
    assert client.get(reverse("ai_engine:operations_index"))["Location"] == page_url("CONSILIUM")
    html = client.get(page_url()).content.decode()
    assert f'href="{page_url("OTHER")}"' in html
    assert client.get(page_url("OTHER")).status_code == 200


def test_a_site_scoped_admin_sees_only_their_sites(
    drift_world: SimpleNamespace, make_user: Callable[..., Any], recruiting: Trial, site_a: Site
) -> None:
    admin_a = make_user("admin-site-a", Role.TRIAL_ADMIN, trial=recruiting, site=site_a)
    ops = summary(admin_a)
    assert not ops.all_sites and [site.code for site in ops.sites] == ["C01"]
    assert {row.status: row.count for row in ops.statuses} == {
        "queued": 3,
        "running": 2,
        "done": 72,
        "failed": 1,
        "abstained": 8,
        "cancelled": 1,
    }
    assert [(reason.code, reason.count) for reason in ops.abstention.reasons] == [
        ("too-small", 4),
        ("blank", 3),
        ("blurred", 1),
    ]
    assert ops.abstention.rate == pytest.approx(0.1)
    # Flags against the rates of the sites shown: abstention 8/80, lesion share 36/72.
    assert list(cells_by_key(ops)) == [("C01", "Acme US-1", "2025-01"), ("C01", "Acme US-1", "2025-02")]
    c1, c2 = ops.drift.cells
    assert (c1.abstention_z, c2.abstention_z) == (pytest.approx(0.0), pytest.approx(0.0))
    assert (c1.lesion_z, c2.lesion_z) == (pytest.approx(-4.0), pytest.approx(4.0))
    assert [failure.site_code for failure in ops.failures] == ["C01"]
    html = login(admin_a).get(page_url()).content.decode()
    assert drift_world.pa.study_id in html and drift_world.pb.study_id not in html
    assert "Your sites: C01 Site A" in html and "C02" not in html


# --- Real outcomes, both arms -------------------------------------------------------------


def test_real_outcomes_of_both_arms_show_without_the_arm(
    users: dict[str, Any],
    coordinator: Any,
    block_scheme: Any,
    enroll: Callable[..., Participant],
    model_version: ModelVersion,
    found: InferenceResult,
    abstained: InferenceResult,
) -> None:
    images: list[Image] = []
    # Randomize until both arms have a participant with an image (a block holds both arms).
    while len(images) < 3 or set(Allocation.objects.values_list("arm", flat=True)) != set(Arm.values):
        participant = randomized(enroll(indication=Indication.THYROID), coordinator)
        upload = imaging_services.image_upload(
            actor=actor_for(coordinator), participant=participant, name="scan.dcm", data=ultrasound_dicom()
        )
        assert upload.image is not None
        images.append(upload.image)
    queued = [services.ai_result_queue(image=image, model_version=model_version) for image in images[:3]]
    services.ai_result_store(result=services.ai_result_start(result=queued[0]), outcome=found)
    services.ai_result_store(result=services.ai_result_start(result=queued[1]), outcome=abstained)
    services.ai_result_fail(result=services.ai_result_start(result=queued[2]), reason="bad-input: truncated")

    ops = summary(users[Role.TRIAL_ADMIN])
    counts = {row.status: row.count for row in ops.statuses}
    assert (counts["done"], counts["abstained"], counts["failed"]) == (1, 1, 1)
    assert [(reason.code, reason.count) for reason in ops.abstention.reasons] == [
        (abstained.reason.partition(":")[0], 1)
    ]
    [cell] = ops.drift.cells
    assert (cell.site_code, cell.device) == ("C01", "Acme Ultrasound Sono 9")
    assert (cell.judged, cell.abstained, cell.done, cell.with_lesion) == (2, 1, 1, 1)
    assert cell.mean_area_mm2 == pytest.approx(found.measurements["total_area_mm2"])
    assert cell.mean_category_probability == pytest.approx(found.category_probability)
    assert [(k.category, k.count) for k in cell.categories] == [(found.category or "no category", 1)]
    assert [(f.image_id, f.reason) for f in ops.failures] == [(images[2].pk, "bad-input: truncated")]
    assert [(device.device, device.finished) for device in ops.devices] == [("cpu", 2)]

    html = login(users[Role.TRIAL_ADMIN]).get(page_url()).content.decode()
    assert "Acme Ultrasound Sono 9" in html
    for text in ARM_TEXTS:
        assert text not in html, text


# --- The API ------------------------------------------------------------------------------

API_URL = "/api/v1/ai/operations/"


def test_the_api_gives_the_same_figures(drift_world: SimpleNamespace) -> None:
    response = api_client(drift_world.users[Role.TRIAL_ADMIN]).get(API_URL, {"trial": "CONSILIUM", "days": "90"})
    assert response.status_code == 200
    body = response.json()
    assert (body["trial"], body["sites"], body["all_sites"], body["window_days"]) == (
        "CONSILIUM",
        ["C01", "C02"],
        True,
        90,
    )
    assert {row["status"]: row["count"] for row in body["statuses"]} == {
        "queued": 3,
        "running": 2,
        "done": 85,
        "failed": 2,
        "abstained": 20,
        "cancelled": 1,
    }
    assert (body["total"], body["outbox"], body["stale_running"]) == (113, 2, 1)
    assert [row["window"] for row in body["latency"]] == ["last 24 h", "last 30 days", "last 90 days (chosen)"]
    assert body["abstention"]["rate"] == pytest.approx(20 / 105)
    assert body["abstention"]["reasons"][0] == {"code": "blank", "count": 9, "share": pytest.approx(0.45)}
    assert body["drift"]["flagged"] == 3
    c3 = next(cell for cell in body["drift"]["cells"] if cell["device"] == "unknown device")
    assert (c3["site"], c3["month"], c3["judged"], c3["abstention_flag"]) == ("C02", "2025-01-01", 20, True)
    assert c3["abstention_z"] == pytest.approx(4.664, abs=1e-3) and c3["lesion_z"] is None
    assert [failure["site"] for failure in body["failures"]] == ["C02", "C01"]
    assert body["broker"]["queue"] == "inference"
    text = response.content.decode()
    for arm in ARM_TEXTS:
        assert arm not in text


def test_the_api_is_for_trial_admins_only(users: dict[str, Any]) -> None:
    for role, user in users.items():
        status = api_client(user).get(API_URL, {"trial": "CONSILIUM"}).status_code
        assert status == (200 if role == Role.TRIAL_ADMIN else 403), role
        # No hint of the query's rules to roles that may not ask.
        assert api_client(user).get(API_URL).status_code == (400 if role == Role.TRIAL_ADMIN else 403), role
    assert api_client(None).get(API_URL, {"trial": "CONSILIUM"}).status_code == 401


def test_the_api_explains_a_bad_query(users: dict[str, Any]) -> None:
    client = api_client(users[Role.TRIAL_ADMIN])
    assert "trial" in client.get(API_URL).json()
    assert "days" in client.get(API_URL, {"trial": "CONSILIUM", "days": "0"}).json()
    assert client.get(API_URL, {"trial": "NO-SUCH-TRIAL"}).status_code == 404


def test_the_api_reports_a_broker_that_does_not_answer(users: dict[str, Any]) -> None:
    with publishing_to("redis://127.0.0.1:1/0"):
        body = api_client(users[Role.TRIAL_ADMIN]).get(API_URL, {"trial": "CONSILIUM"}).json()
    assert body["broker"]["waiting"] is None and "Connection refused" in body["broker"]["error"]


def test_an_infinite_distance_is_null_in_json() -> None:
    from ai_engine.serializers import FiniteFloatField

    field = FiniteFloatField(allow_null=True)
    assert field.to_representation(float("inf")) is None and field.to_representation(-2.5) == -2.5


def test_the_openapi_schema_names_the_operations_endpoint(users: dict[str, Any]) -> None:
    paths = api_client(users[Role.TRIAL_ADMIN]).get("/api/schema/", {"format": "json"}).json()["paths"]
    operation = paths[API_URL]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {"trial", "days"}
    assert {"200", "400", "403", "404"} <= set(operation["responses"])
