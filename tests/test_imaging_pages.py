"""The imaging pages as a coordinator, a monitor and a clinician use them:
the gallery, the upload panel and its plain-form fallback, the image page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from imaging.models import Image, ImageStatus
from randomization.services import participant_randomize
from tests.conftest import actor_for, api_client, login
from tests.test_imaging_api import BROKEN, CINE, GOOD_ULTRASOUND, upload_file
from trial import services
from trial.models import Role, WithdrawalScope


@pytest.fixture
def thyroid(enroll: Any, coordinator: Any, block_scheme: Any) -> Any:
    participant = enroll(indication="thyroid")
    participant_randomize(actor=actor_for(coordinator), participant=participant)
    return participant


def page_url(participant: Any) -> str:
    return reverse("imaging:participant_images", kwargs={"pk": participant.pk})


def post_form(client: Client, participant: Any, files: list[SimpleUploadedFile]) -> Any:
    return client.post(page_url(participant), {"file": files})


def uploaded(coordinator: Any, participant: Any, names: list[str]) -> list[Image]:
    response = api_client(coordinator).post(
        f"/api/v1/participants/{participant.pk}/images/", {"file": [upload_file(n) for n in names]}, format="multipart"
    )
    return [Image.objects.get(pk=result["image_id"]) for result in response.json()]


def assert_no_inline_code(html: str) -> None:
    """The coming Content-Security-Policy has no 'unsafe-inline'."""
    assert " style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=", html)


def test_the_gallery_shows_thumbnails_geometry_spacing_and_status(coordinator, thyroid):
    cine, _still, rejected = uploaded(coordinator, thyroid, [CINE, "examples_rgb_color.dcm", "badVR.dcm"])

    response = login(coordinator).get(page_url(thyroid))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="/api/v1/images/{cine.pk}/thumbnail.png"' in html
    assert f'href="/imaging/images/{cine.pk}/"' in html
    assert "240 × 320 px · 30 frames" in html
    assert "spacing 0.510 × 0.510 mm" in html
    assert "spacing unknown" in html  # the still image has no calibration
    assert "image-status-rejected" in html and escape(rejected.rejection_reason) in html
    assert "3 · 0 accepted · 2 to review · 1 rejected" in html
    assert f'href="/participants/{thyroid.pk}/"' in html  # back to the participant
    assert_no_inline_code(html)


def test_the_gallery_flags_an_image_that_needs_review(coordinator, thyroid):
    (image,) = uploaded(coordinator, thyroid, ["examples_palette.dcm"])
    Image.objects.filter(pk=image.pk).update(status=ImageStatus.NEEDS_REVIEW)

    html = login(coordinator).get(page_url(thyroid)).content.decode()

    assert "image-status-needs_review" in html and "Needs review" in html


def test_the_upload_panel_posts_to_the_api_and_falls_back_to_a_plain_form(coordinator, thyroid):
    html = login(coordinator).get(page_url(thyroid)).content.decode()

    assert f'data-upload-url="/api/v1/participants/{thyroid.pk}/images/"' in html
    assert 'enctype="multipart/form-data"' in html
    assert f'action="{page_url(thyroid)}"' in html
    assert re.search(r'<input type="file" name="file"[^>]*multiple', html)
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<script src="/static/js/upload.js" defer></script>' in html
    assert "Export zip" not in html  # coordinators do not export


@pytest.mark.parametrize("role", [Role.MONITOR, Role.STATISTICIAN_BLINDED, Role.CLINICIAN_READER, Role.TRIAL_ADMIN])
def test_viewers_see_the_gallery_without_an_upload_panel(role, users, coordinator, thyroid):
    (image,) = uploaded(coordinator, thyroid, ["examples_palette.dcm"])

    html = login(users[role]).get(page_url(thyroid)).content.decode()

    assert f"/api/v1/images/{image.pk}/thumbnail.png" in html
    assert "data-upload-url" not in html and "upload.js" not in html
    assert "examples_palette.dcm" not in html  # the uploaded name is for the coordinator
    exports = role in (Role.MONITOR, Role.STATISTICIAN_BLINDED)
    assert (f'href="/api/v1/participants/{thyroid.pk}/images/export.zip"' in html) == exports


def test_the_fallback_form_uploads_several_files_and_shows_each_result(coordinator, thyroid):
    names = [*GOOD_ULTRASOUND, *BROKEN]

    response = post_form(login(coordinator), thyroid, [upload_file(name) for name in names])

    html = response.content.decode()
    assert response.status_code == 200
    assert Image.objects.filter(participant=thyroid, status=ImageStatus.NEEDS_REVIEW).count() == 4
    assert html.count("upload-item upload-accepted") == 4
    assert html.count("upload-item upload-rejected") == 2
    for name in names:
        assert f'<span class="upload-name">{name}</span>' in html
    for reason in BROKEN.values():
        assert escape(reason) in html
    # The gallery below already holds the new images.
    for image in Image.objects.filter(participant=thyroid, status=ImageStatus.ACCEPTED):
        assert f"/api/v1/images/{image.pk}/thumbnail.png" in html


def test_the_fallback_form_answers_a_duplicate(coordinator, thyroid):
    client = login(coordinator)
    post_form(client, thyroid, [upload_file("examples_palette.dcm")])

    html = post_form(client, thyroid, [upload_file("examples_palette.dcm")]).content.decode()

    assert "upload-item upload-duplicate" in html
    assert "already uploaded for this participant" in html


def test_the_fallback_form_rejects_an_oversized_file_without_a_500(coordinator, thyroid, settings):
    settings.IMAGING_MAX_UPLOAD_BYTES = 2048

    response = post_form(login(coordinator), thyroid, [upload_file(CINE)])

    assert response.status_code == 200
    assert "upload-item upload-rejected" in response.content.decode()
    assert "over the limit of 2.0 KB" in response.content.decode()
    assert not Image.objects.exists()


def test_the_fallback_form_asks_for_a_file(coordinator, thyroid):
    response = login(coordinator).post(page_url(thyroid), {})

    assert response.status_code == 400
    assert "Choose at least one file." in response.content.decode()


def test_the_fallback_form_needs_the_csrf_token(coordinator, thyroid):
    client = Client(enforce_csrf_checks=True)
    client.force_login(coordinator)

    refused = client.post(page_url(thyroid), {"file": [upload_file("examples_palette.dcm")]})
    token = client.get(page_url(thyroid)).context["csrf_token"]
    taken = client.post(
        page_url(thyroid), {"file": [upload_file("examples_palette.dcm")], "csrfmiddlewaretoken": str(token)}
    )

    assert refused.status_code == 403
    assert taken.status_code == 200
    assert Image.objects.filter(participant=thyroid).count() == 1


def test_the_image_page_shows_preview_frames_facts_and_deidentification(coordinator, thyroid):
    (image,) = uploaded(coordinator, thyroid, [CINE])

    response = login(coordinator).get(reverse("imaging:image_detail", kwargs={"pk": image.pk}))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="/api/v1/images/{image.pk}/preview.png"' in html
    assert f'src="/api/v1/images/{image.pk}/frames.png"' in html
    assert "cine loop of 30 frames" in html
    assert "240 × 320 px" in html and "0.5105 × 0.5105 mm (row × column)" in html
    assert image.sha256 in html
    assert f'href="/api/v1/images/{image.pk}/file"' in html
    assert f'href="{page_url(thyroid)}"' in html and f'href="/participants/{thyroid.pk}/"' in html
    for name in [*image.deidentification.removed, *image.deidentification.changed][:5]:
        assert f"<code>{name}</code>" in html
    assert_no_inline_code(html)


def test_the_image_page_of_a_single_frame_has_no_frame_strip(coordinator, thyroid):
    (image,) = uploaded(coordinator, thyroid, ["examples_palette.dcm"])

    html = login(coordinator).get(reverse("imaging:image_detail", kwargs={"pk": image.pk})).content.decode()

    assert "frames.png" not in html
    assert "0.2623 × 0.2623 mm" in html


def test_the_image_page_of_a_rejected_upload_gives_the_reason(coordinator, thyroid):
    (image,) = uploaded(coordinator, thyroid, ["MR_truncated.dcm"])

    html = login(coordinator).get(reverse("imaging:image_detail", kwargs={"pk": image.pk})).content.decode()

    assert "Rejected:" in html and "truncated" in html
    assert "preview.png" not in html and "/file" not in html


def test_the_page_of_a_participant_who_withdrew_their_data_shows_no_images(coordinator, thyroid):
    (image,) = uploaded(coordinator, thyroid, ["examples_palette.dcm"])
    services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=thyroid,
        withdrawn_on=timezone.localdate(),
        scope=WithdrawalScope.WITHDRAW_DATA,
        reason="Asked for their data to be removed",
    )
    client = login(coordinator)

    html = client.get(page_url(thyroid)).content.decode()

    assert "withdrew their data" in html
    assert "thumbnail.png" not in html
    assert "data-upload-url" not in html and "No images are accepted" in html
    assert client.get(reverse("imaging:image_detail", kwargs={"pk": image.pk})).status_code == 404


def test_the_upload_script_is_a_static_file_that_posts_each_file_with_the_csrf_token(client):
    from django.contrib.staticfiles import finders

    path = finders.find("js/upload.js")
    script = open(path, encoding="utf-8").read()  # noqa: SIM115

    assert "XMLHttpRequest" in script and "X-CSRFToken" in script
    assert 'data.append("file"' in script
    assert "innerHTML" not in script  # file names are shown as text, never as markup


@pytest.mark.parametrize("role", ["coordinator", "clinician_reader", "monitor", "pathologist", "dsmb"])
def test_the_participant_page_links_to_the_images_only_for_roles_that_see_them(role, users, participant):
    html = login(users[role]).get(f"/participants/{participant.pk}/").content.decode()
    link = f'href="/imaging/participants/{participant.pk}/"'
    assert (link in html) == (role in ("coordinator", "clinician_reader", "monitor"))
