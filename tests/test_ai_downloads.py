"""The files of an AI result that other software reads (the DICOM
Segmentation, the PNG overlay and the mask), downloaded by trial admins from
the operations page: the stored bytes, checked against their sha256, as an
attachment named without participant identifiers; each download an audit
event. Every other role is refused (who else may see AI output is decided by
the readings); a result outside the admin's trials or sites, or without the
file, is not found; an altered file is never served. The page lists the
recent results with their files, within the admin's sites, without the arm."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import pydicom
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.http import Http404
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from ai_engine import jobs, operations, selectors, services
from ai_engine.inference import InferenceResult
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from ai_engine.synthetic import colposcopy_frame
from imaging import services as imaging_services
from imaging import storage
from imaging.models import Image
from randomization.models import Allocation, Arm
from tests.ai_fixtures import make_images
from tests.conftest import actor_for, api_client, login
from tests.imaging_files import other_trial_participant, randomized, ultrasound_dicom
from trial.audit import verify_chain
from trial.errors import NotAllowed, RuleViolation
from trial.models import AuditEvent, Indication, Participant, Role, Site, Trial, WithdrawalScope
from trial.services import participant_withdraw

pytestmark = pytest.mark.django_db

KINDS = ("segmentation", "overlay", "mask")
CONTENT_TYPES = {"segmentation": "application/dicom", "overlay": "image/png", "mask": "image/png"}
EXTENSIONS = {"segmentation": "dcm", "overlay": "png", "mask": "png"}
SIZE = 128  # the shared outcomes' masks are 128 × 128: the uploads are too
ARM_TEXTS = [Arm.AI_ASSISTED.label, Arm.SPECIALIST_ONLY.label, Arm.AI_ASSISTED.value, Arm.SPECIALIST_ONLY.value]
OPERATIONS_API = "/api/v1/ai/operations/"
_seeds = count(1)


def file_url(result: AiResult | int, kind: str) -> str:
    pk = result if isinstance(result, int) else result.pk
    return reverse("ai_engine:ai_result_file", args=[pk, kind])


def page_url() -> str:
    return reverse("ai_engine:operations", args=["CONSILIUM"])


def downloads(result: AiResult | None = None) -> list[AuditEvent]:
    found = AuditEvent.objects.filter(action="ai_result.download")
    if result is not None:
        found = found.filter(object_type="ai_engine.airesult", object_id=str(result.pk))
    return list(found.order_by("sequence"))


def stored_bytes(name: str) -> bytes:
    return (Path(settings.MEDIA_ROOT) / name).read_bytes()


# --- Building real results --------------------------------------------------------------


@pytest.fixture
def model_version(db: Any) -> ModelVersion:
    """The shipped thyroid checkpoint, registered: the shared outcomes were made by it."""
    return services.model_register(
        actor=services.AI_ENGINE,
        path=services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )


def photograph_png(seed: int) -> bytes:
    frame = colposcopy_frame(np.random.default_rng(seed), SIZE)
    buffer = io.BytesIO()
    PILImage.fromarray(frame.image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_image(
    coordinator: Any, coordinator_b: Any, site_b: Site, block_scheme: Any, enroll: Callable[..., Participant]
) -> Callable[..., Image]:
    """An accepted upload of a randomized participant: a 128 × 128 ultrasound
    DICOM (thyroid) or a 128 × 128 colposcopy photograph (cervical), at site
    A or, with at_site_b, at site B."""

    def make(*, photograph: bool = False, at_site_b: bool = False) -> Image:
        by = coordinator_b if at_site_b else coordinator
        indication = Indication.CERVICAL if photograph else Indication.THYROID
        participant = randomized(
            enroll(indication=indication, site=site_b if at_site_b else None, user=by if at_site_b else None), by
        )
        seed = next(_seeds)
        if photograph:
            name, data = "cervix.png", photograph_png(seed)
        else:
            name, data = "scan.dcm", ultrasound_dicom(rows=SIZE, columns=SIZE, monochrome_bits=8, seed=seed)
        upload = imaging_services.image_upload(actor=actor_for(by), participant=participant, name=name, data=data)
        assert upload.status == "accepted", upload.reason
        assert upload.image is not None
        return upload.image

    return make


@pytest.fixture
def finish(model_version: ModelVersion) -> Callable[..., AiResult]:
    """Queue, start and store an outcome for an image through the services;
    for a done outcome, attach its exports (made as the workers make them:
    a DICOM Segmentation for DICOM input, a PNG overlay) unless told not to."""

    def run(image: Image, outcome: InferenceResult, *, exports: bool = True) -> AiResult:
        result = services.ai_result_queue(image=image, model_version=model_version)
        result = services.ai_result_store(result=services.ai_result_start(result=result), outcome=outcome)
        if exports and result.status == AiResultStatus.DONE:
            assert outcome.mask is not None
            made = jobs.make_exports(result, jobs.load_input(image), outcome.mask, outcome.frame_index)
            assert isinstance(made, services.Exports) and made.overlay is not None, made.note
            result = services.ai_result_attach_exports(result=result, exports=made)
        return AiResult.objects.select_related("image__participant", "model_version").get(pk=result.pk)

    return run


@pytest.fixture
def done_dicom(make_image: Callable[..., Image], finish: Callable[..., AiResult], found: InferenceResult) -> AiResult:
    result = finish(make_image(), found)
    assert result.segmentation and result.overlay and result.mask
    return result


# --- Downloads --------------------------------------------------------------------------


def test_each_file_downloads_for_a_trial_admin_and_is_audited(
    done_dicom: AiResult, users: dict[str, Any], model_version: ModelVersion
) -> None:
    admin = users[Role.TRIAL_ADMIN]
    client = login(admin)
    study_id = done_dicom.image.participant.study_id
    for number, kind in enumerate(KINDS, start=1):
        response = client.get(file_url(done_dicom, kind))
        assert response.status_code == 200, kind
        name, sha256 = getattr(done_dicom, kind).name, getattr(done_dicom, f"{kind}_sha256")
        assert response.content == stored_bytes(name)
        assert hashlib.sha256(response.content).hexdigest() == sha256
        assert response["Content-Type"] == CONTENT_TYPES[kind]
        disposition = response["Content-Disposition"]
        assert disposition == f'attachment; filename="ai-result-{done_dicom.pk}-{kind}.{EXTENSIONS[kind]}"'
        assert study_id not in disposition
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Length"] == str(len(response.content))
        assert "no-store" in response["Cache-Control"]
        # Exactly one more audit event, naming the file and the checkpoint that made it.
        events = downloads(done_dicom)
        assert len(events) == number, kind
        event = events[-1]
        assert (event.actor_id, event.role, event.trial_id, event.site_id) == (
            admin.pk,
            Role.TRIAL_ADMIN,
            done_dicom.image.trial_id,
            done_dicom.image.site_id,
        )
        assert event.after == {
            "kind": kind,
            "sha256": sha256,
            "image": done_dicom.image_id,
            "model_sha256": model_version.sha256,
        }
        assert event.request_id  # tied to the request that took the file
    assert verify_chain().ok


def test_the_files_open_as_what_they_claim_to_be(done_dicom: AiResult, users: dict[str, Any]) -> None:
    client = login(users[Role.TRIAL_ADMIN])
    segmentation = highdicom.seg.segread(io.BytesIO(client.get(file_url(done_dicom, "segmentation")).content))
    source = pydicom.dcmread(io.BytesIO(storage.read_verified(done_dicom.image.file.name, done_dicom.image.sha256)))
    assert segmentation.Modality == "SEG" and segmentation.StudyInstanceUID == source.StudyInstanceUID
    mask = selectors.ai_result_mask(done_dicom)
    assert np.array_equal(segmentation.pixel_array.astype(bool).reshape(mask.shape), mask > 0)
    with PILImage.open(io.BytesIO(client.get(file_url(done_dicom, "overlay")).content)) as overlay:
        assert (overlay.format, overlay.mode, overlay.size) == ("PNG", "RGB", (SIZE, SIZE))
    with PILImage.open(io.BytesIO(client.get(file_url(done_dicom, "mask")).content)) as picture:
        assert picture.format == "PNG" and np.array_equal(np.asarray(picture) > 127, mask > 0)


def test_every_other_role_is_refused(done_dicom: AiResult, users: dict[str, Any]) -> None:
    for role, user in users.items():
        if role == Role.TRIAL_ADMIN:
            continue
        client = login(user)
        for kind in (*KINDS, "no-such-kind"):
            assert client.get(file_url(done_dicom, kind)).status_code == 403, (role, kind)
        with pytest.raises(NotAllowed):
            services.ai_result_download(actor=actor_for(user), result=done_dicom, kind="mask")
    assert downloads() == []


def test_a_site_scoped_admin_does_not_find_another_sites_result(
    make_image: Callable[..., Image],
    finish: Callable[..., AiResult],
    found: InferenceResult,
    make_user: Callable[..., Any],
    recruiting: Trial,
    site_a: Site,
) -> None:
    at_a, at_b = finish(make_image(), found), finish(make_image(at_site_b=True), found)
    admin_a = login(make_user("admin-site-a", Role.TRIAL_ADMIN, trial=recruiting, site=site_a))
    assert admin_a.get(file_url(at_a, "overlay")).status_code == 200
    for kind in KINDS:
        assert admin_a.get(file_url(at_b, kind)).status_code == 404, kind
    assert [event.object_id for event in downloads()] == [str(at_a.pk)]


def test_an_admin_of_another_trial_does_not_find_the_result(
    done_dicom: AiResult, make_user: Callable[..., Any]
) -> None:
    other_participant, _ = other_trial_participant(make_user)
    other_admin = make_user("admin-other", Role.TRIAL_ADMIN, trial=other_participant.trial)
    client = login(other_admin)
    for kind in KINDS:
        assert client.get(file_url(done_dicom, kind)).status_code == 404, kind
    with pytest.raises(Http404, match="among the trials and sites whose AI you administer"):
        selectors.ai_result_file(other_admin, done_dicom.pk, "mask")
    assert downloads() == []


def test_an_unknown_result_or_kind_is_not_found(done_dicom: AiResult, users: dict[str, Any]) -> None:
    admin = users[Role.TRIAL_ADMIN]
    client = login(admin)
    missing = AiResult.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1
    assert client.get(file_url(missing, "mask")).status_code == 404
    for kind in ("probability", "preview", "MASK", "file"):
        assert client.get(file_url(done_dicom, kind)).status_code == 404, kind
    with pytest.raises(Http404, match="No such kind of AI output: 'probability'"):
        selectors.ai_result_file(admin, done_dicom.pk, "probability")
    with pytest.raises(RuleViolation, match="No such kind of AI output"):
        services.ai_result_download(actor=actor_for(admin), result=done_dicom, kind="probability")
    assert downloads() == []


def test_files_a_result_does_not_have_are_not_found_and_say_why(
    make_image: Callable[..., Image],
    finish: Callable[..., AiResult],
    model_version: ModelVersion,
    found: InferenceResult,
    abstained: InferenceResult,
    users: dict[str, Any],
) -> None:
    admin = users[Role.TRIAL_ADMIN]
    client = login(admin)
    blank = finish(make_image(), abstained)
    photo = finish(make_image(photograph=True), found)
    unexported = finish(make_image(), found, exports=False)
    queued = services.ai_result_queue(image=make_image(), model_version=model_version)
    failed = services.ai_result_fail(
        result=services.ai_result_start(
            result=services.ai_result_queue(image=make_image(), model_version=model_version)
        ),
        reason="bad-input: truncated",
    )
    absent = {
        blank: KINDS,
        photo: ("segmentation",),
        unexported: ("segmentation", "overlay"),
        queued: KINDS,
        failed: KINDS,
    }
    for result, kinds in absent.items():
        for kind in KINDS:
            expected = 404 if kind in kinds else 200
            assert client.get(file_url(result, kind)).status_code == expected, (result.status, kind)
    messages = [
        (blank, "mask", "has no mask PNG: the AI abstained on the image " + re.escape(f"({abstained.reason})")),
        (photo, "segmentation", "only DICOM images get a DICOM Segmentation"),
        (unexported, "overlay", "has no PNG overlay yet: its exports are still being made"),
        (queued, "segmentation", "it is queued; only a finished result has files"),
        (failed, "mask", "it is failed \\(bad-input: truncated\\); only a finished result has files"),
    ]
    for result, kind, message in messages:
        with pytest.raises(Http404, match=message):
            selectors.ai_result_file(admin, result.pk, kind)
    # Only the files that exist were given out, each once.
    assert sorted((event.object_id, event.after["kind"]) for event in downloads() if event.after) == sorted(
        [(str(photo.pk), "overlay"), (str(photo.pk), "mask"), (str(unexported.pk), "mask")]
    )


def test_a_tampered_file_is_not_served_and_not_audited(done_dicom: AiResult, users: dict[str, Any]) -> None:
    client = login(users[Role.TRIAL_ADMIN])
    path = Path(settings.MEDIA_ROOT) / done_dicom.segmentation.name
    original = path.read_bytes()
    altered = original[:-16] + bytes(byte ^ 0xFF for byte in original[-16:])
    path.write_bytes(altered)

    response = client.get(file_url(done_dicom, "segmentation"))

    assert response.status_code == 409
    body = response.content
    assert body.startswith(b"The stored DICOM Segmentation of AI result") and b"failed its integrity check" in body
    assert altered[-200:] not in body and "attachment" not in response.get("Content-Disposition", "")
    assert downloads() == []
    # The other files of the result are intact and still served.
    assert client.get(file_url(done_dicom, "overlay")).status_code == 200
    assert [event.after["kind"] for event in downloads() if event.after] == ["overlay"]


def test_a_missing_stored_file_is_a_conflict_too(done_dicom: AiResult, users: dict[str, Any]) -> None:
    (Path(settings.MEDIA_ROOT) / done_dicom.overlay.name).unlink()
    response = login(users[Role.TRIAL_ADMIN]).get(file_url(done_dicom, "overlay"))
    assert response.status_code == 409 and b"could not be read" in response.content
    assert downloads() == []


def test_a_participant_who_withdrew_their_data_has_no_files_given_out(
    done_dicom: AiResult, users: dict[str, Any], coordinator: Any
) -> None:
    participant_withdraw(
        actor=actor_for(coordinator),
        participant=done_dicom.image.participant,
        withdrawn_on=timezone.localdate(),
        scope=WithdrawalScope.WITHDRAW_DATA,
        reason="Asked for their data to be withdrawn",
    )
    admin = users[Role.TRIAL_ADMIN]
    for kind in KINDS:
        assert login(admin).get(file_url(done_dicom, kind)).status_code == 404, kind
    with pytest.raises(Http404, match="withdrew their data"):
        selectors.ai_result_file(admin, done_dicom.pk, "mask")
    [row] = operations.operations_summary(admin, trial_code="CONSILIUM").recent_results
    assert row.data_withdrawn and row.files == []
    assert downloads() == []


def test_anonymous_visitors_are_sent_to_the_login(done_dicom: AiResult) -> None:
    response = Client().get(file_url(done_dicom, "mask"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert downloads() == []


# --- The recent results on the operations page ------------------------------------------


def test_the_page_lists_recent_results_with_their_files_and_no_arm(
    make_image: Callable[..., Image],
    finish: Callable[..., AiResult],
    model_version: ModelVersion,
    found: InferenceResult,
    abstained: InferenceResult,
    users: dict[str, Any],
) -> None:
    images = [make_image() for _ in range(3)]
    # Both arms among the participants (a block holds both).
    while set(Allocation.objects.values_list("arm", flat=True)) != set(Arm.values):
        images.append(make_image())
    dicom_result = finish(images[0], found)
    blank = finish(images[1], abstained)
    photo = finish(make_image(photograph=True), found)
    services.ai_result_fail(
        result=services.ai_result_start(result=services.ai_result_queue(image=images[2], model_version=model_version)),
        reason="bad-input: truncated",
    )
    for image in images[3:]:
        services.ai_result_queue(image=image, model_version=model_version)

    admin = users[Role.TRIAL_ADMIN]
    rows = operations.operations_summary(admin, trial_code="CONSILIUM").recent_results
    # Done and abstained only, the last finished first.
    assert [row.result_id for row in rows] == [photo.pk, blank.pk, dicom_result.pk]
    by_id = {row.result_id: row for row in rows}
    top = by_id[dicom_result.pk]
    assert (top.image_id, top.study_id, top.site_code, top.device, top.status) == (
        images[0].pk,
        images[0].participant.study_id,
        "C01",
        "Acme Ultrasound Sono 9",
        "done",
    )
    assert (top.category, top.category_probability, top.lesion_count) == (
        found.category,
        pytest.approx(found.category_probability),
        found.measurements["lesion_count"],
    )
    assert top.reason_code == "" and top.finished_at == dicom_result.finished_at
    assert top.files == ["overlay", "segmentation", "mask"]
    assert by_id[photo.pk].files == ["overlay", "mask"] and by_id[photo.pk].device == "unknown device"
    row = by_id[blank.pk]
    assert (row.status, row.reason_code, row.files, row.category) == (
        "abstained",
        operations.reason_code(abstained.reason),
        [],
        "",
    )

    html = login(admin).get(page_url()).content.decode()
    section = html[html.index('id="recent-results"') : html.index('id="failures"')]
    for kind in KINDS:
        assert f'href="{file_url(dicom_result, kind)}"' in section, kind
    assert f'href="{file_url(photo, "overlay")}"' in section and f'href="{file_url(photo, "mask")}"' in section
    assert file_url(photo, "segmentation") not in section and f"/ai/results/{blank.pk}/" not in section
    assert f"<code>{operations.reason_code(abstained.reason)}</code>" in section
    assert images[0].participant.study_id in section and "Acme Ultrasound Sono 9" in section
    for text in ARM_TEXTS:
        assert text not in html, text


def test_a_site_scoped_admin_sees_only_their_sites_results(
    make_image: Callable[..., Image],
    finish: Callable[..., AiResult],
    found: InferenceResult,
    make_user: Callable[..., Any],
    recruiting: Trial,
    site_a: Site,
    users: dict[str, Any],
) -> None:
    at_a, at_b = finish(make_image(), found), finish(make_image(at_site_b=True), found)
    everyone = operations.operations_summary(users[Role.TRIAL_ADMIN], trial_code="CONSILIUM").recent_results
    assert [(row.result_id, row.site_code) for row in everyone] == [(at_b.pk, "C02"), (at_a.pk, "C01")]
    admin_a = make_user("admin-site-a", Role.TRIAL_ADMIN, trial=recruiting, site=site_a)
    [row] = operations.operations_summary(admin_a, trial_code="CONSILIUM").recent_results
    assert row.result_id == at_a.pk
    html = login(admin_a).get(page_url()).content.decode()
    assert file_url(at_a, "mask") in html and f"/ai/results/{at_b.pk}/" not in html
    assert at_b.image.participant.study_id not in html


def test_the_api_names_the_files_of_the_recent_results(done_dicom: AiResult, users: dict[str, Any]) -> None:
    body = api_client(users[Role.TRIAL_ADMIN]).get(OPERATIONS_API, {"trial": "CONSILIUM"}).json()
    [row] = body["recent_results"]
    assert (row["result"], row["image"], row["site"], row["status"], row["files"]) == (
        done_dicom.pk,
        done_dicom.image_id,
        "C01",
        "done",
        ["overlay", "segmentation", "mask"],
    )
    assert row["study_id"] == done_dicom.image.participant.study_id and row["data_withdrawn"] is False


# --- A constant number of queries -------------------------------------------------------


def rows_only(participant: Participant, uploader: Any, model_version: ModelVersion, how_many: int) -> list[AiResult]:
    """Finished results as rows only (the table reads names, not files),
    on images of a study naming a device, one minute apart."""
    images = make_images(participant, how_many, device=("Acme", "US-1"), uploader=uploader)
    now = timezone.now()
    return AiResult.objects.bulk_create(
        AiResult(
            image=image,
            model_version=model_version,
            status=AiResultStatus.DONE if i % 2 else AiResultStatus.ABSTAINED,
            reason="" if i % 2 else "blank: uniform",
            finished_at=now - dt.timedelta(minutes=i),
            measurements={"lesion_count": i} if i % 2 else {},
            category="benign" if i % 2 else "",
            category_probability=0.5 if i % 2 else None,
            mask=f"ai-results/mask-{i}.png" if i % 2 else "",
            overlay=f"ai-results/overlay-{i}.png" if i % 2 else "",
            segmentation=f"ai-results/seg-{i}.dcm" if i % 2 else "",
        )
        for i, image in enumerate(images)
    )


def test_the_recent_results_cost_the_same_queries_however_many(
    users: dict[str, Any], coordinator: Any, enroll: Callable[..., Participant], model_version: ModelVersion
) -> None:
    admin = users[Role.TRIAL_ADMIN]
    participant = enroll(indication=Indication.THYROID)
    rows_only(participant, coordinator, model_version, 1)

    def queries() -> tuple[int, int, list[operations.RecentResult]]:
        fresh = get_user_model().objects.get(pk=admin.pk)  # memberships not yet read (they are cached on the user)
        with CaptureQueriesContext(connection) as summary:
            rows = operations.operations_summary(fresh, trial_code="CONSILIUM").recent_results
        client = login(admin)
        with CaptureQueriesContext(connection) as page:
            assert client.get(page_url()).status_code == 200
        return len(summary.captured_queries), len(page.captured_queries), rows

    few_summary, few_page, few_rows = queries()
    assert len(few_rows) == 1
    rows_only(participant, coordinator, model_version, 40)
    many_summary, many_page, many_rows = queries()
    assert (many_summary, many_page) == (few_summary, few_page)
    # The 20 most recently finished, newest first, with their devices and lesion counts.
    assert len(many_rows) == operations.RECENT_RESULTS == 20
    finished = [row.finished_at for row in many_rows if row.finished_at is not None]
    assert len(finished) == 20 and finished == sorted(finished, reverse=True)
    assert {row.device for row in many_rows} == {"Acme US-1"}
    # The newest: the second batch's rows 0–18 (one minute apart) and, a moment
    # before the second batch's first, the first batch's only row (abstained).
    assert sorted(row.lesion_count or 0 for row in many_rows if row.status == "done") == list(range(1, 19, 2))
    assert {row.lesion_count for row in many_rows if row.status == "abstained"} == {None}
