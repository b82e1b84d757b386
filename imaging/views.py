"""HTML pages of the imaging app: a participant's images (gallery, upload
panel with its plain-form fallback, export link) and one image (preview,
frame strip, facts, de-identification record).

Thin, as trial.views: trial.selectors scopes the participant,
imaging.selectors decides who sees images, the upload service writes, one
call per file. The pictures themselves come from the API's file endpoints,
which check each file's sha256 before serving it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from imaging import selectors, uploads
from imaging.forms import UploadForm
from imaging.models import Image, ImageStatus
from imaging.uploads import FileResult
from trial import selectors as trial_selectors
from trial.actors import Actor
from trial.errors import NotAllowed
from trial.models import Participant
from trial.permissions import Capability


@dataclass(frozen=True)
class ImageCounts:
    total: int
    accepted: int
    needs_review: int
    rejected: int


def _counts(images: list[Image]) -> ImageCounts:
    statuses = [image.status for image in images]
    return ImageCounts(
        total=len(statuses),
        accepted=statuses.count(ImageStatus.ACCEPTED),
        needs_review=statuses.count(ImageStatus.NEEDS_REVIEW),
        rejected=statuses.count(ImageStatus.REJECTED),
    )


def _images_page(
    request: HttpRequest,
    participant: Participant,
    *,
    form: UploadForm | None = None,
    results: list[FileResult] | None = None,
    status: int = 200,
) -> HttpResponse:
    user = request.user
    images = list(selectors.images_of(user, participant).select_related("uploaded_by"))
    ai_analysis = selectors.ai_analysis_of(user, participant)
    may_upload = selectors.can_upload(user, participant)
    # The upload service refuses images of a withdrawn participant; the page
    # says so up front instead of offering a panel that would only refuse.
    takes_images = participant.accepts_clinical_data and participant.accepts_ai_processing
    limit = uploads.max_upload_bytes()
    context: dict[str, Any] = {
        "participant": participant,
        "images": images,
        "counts": _counts(images),
        "ai_analysis": ai_analysis,
        "ai_analysis_final": all(analysis.final for analysis in ai_analysis),
        "may_upload": may_upload,
        "takes_images": takes_images,
        "may_export": selectors.can_export(user, participant) and not participant.data_withdrawn,
        "show_original_names": may_upload,
        "form": form or UploadForm(),
        "results": results,
        "max_upload_bytes": limit,
        "max_upload_label": uploads.size_label(limit),
    }
    return render(request, "imaging/participant_images.html", context, status=status)


@csrf_exempt
@login_required
@require_http_methods(["GET", "POST"])
def participant_images(request: HttpRequest, pk: int) -> HttpResponse:
    # The size guard must be in place before the CSRF check reads the body,
    # hence csrf_exempt here and csrf_protect on the view proper (the pattern
    # Django documents for changing upload handlers).
    if request.method == "POST":
        uploads.guard_upload_size(request)
    return _participant_images(request, pk)


@csrf_protect
def _participant_images(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    if request.method == "GET":
        trial_selectors.require_capability(user, Capability.VIEW_IMAGES)
        return _images_page(request, trial_selectors.participant_get(user, pk))
    trial_selectors.require_capability(user, Capability.UPLOAD_IMAGES)
    participant = trial_selectors.participant_get(user, pk)
    if not selectors.can_upload(user, participant):
        raise PermissionDenied("Your role does not upload images at this participant's site.")
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _images_page(request, participant, form=form, status=400)
    try:
        results = uploads.receive(
            actor=Actor.from_request(request), participant=participant, files=form.cleaned_data["file"]
        )
    except NotAllowed as error:
        raise PermissionDenied(error.message) from error
    # 507 when the server had no room for a file: the page lists which.
    status = 507 if any(result.storage_full for result in results) else 200
    return _images_page(request, participant, results=results, status=status)


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


def _spacing(image: Image) -> str:
    spacing = image.pixel_spacing_mm
    if spacing is None:
        return "unknown (no calibration in the file): sizes in millimetres cannot be measured"
    text = f"{spacing[0]:.4g} × {spacing[1]:.4g} mm (row × column)"
    return f"{text}, from {image.spacing_source}" if image.spacing_source else text


def _facts(image: Image, *, show_original_name: bool) -> list[Fact]:
    facts = [
        Fact("Status", image.get_status_display()),
        Fact("Format", image.get_file_format_display() or "—"),
        Fact("Kind", image.get_kind_display() or "—"),
        Fact("Rows × columns", f"{image.rows} × {image.columns} px" if image.rows else "—"),
        Fact("Frames", f"{image.frames} (key frame {image.key_frame + 1})" if image.frames else "—"),
        Fact("Pixel spacing", _spacing(image) if image.rows else "—"),
        Fact(
            "Samples per pixel",
            f"{image.samples_per_pixel} ({image.photometric_interpretation})" if image.samples_per_pixel else "—",
        ),
        Fact("Bits stored", str(image.bits_stored) if image.bits_stored else "—"),
        Fact("Transfer syntax", image.transfer_syntax or "—"),
        Fact("Stored size", uploads.size_label(image.size_bytes)),
        Fact("sha256 (stored file)", image.sha256 or "—"),
        Fact("Uploaded", f"{image.uploaded_at:%Y-%m-%d %H:%M} UTC by {image.uploaded_by.get_username()}"),
    ]
    if image.study is not None:
        device = " ".join(part for part in (image.study.device_manufacturer, image.study.device_model) if part)
        facts.append(Fact("Study", image.study.study_instance_uid or image.study.get_kind_display()))
        facts.append(Fact("Device", device or "—"))
    if show_original_name:
        facts.append(Fact("Uploaded as", image.original_name or "—"))
    return facts


@login_required
@require_GET
def image_detail(request: HttpRequest, pk: int) -> HttpResponse:
    image = selectors.image_get(request.user, pk)
    participant = image.participant
    show_original_name = selectors.can_upload(request.user, participant)
    context = {
        "image": image,
        "participant": participant,
        "facts": _facts(image, show_original_name=show_original_name),
        "record": getattr(image, "deidentification", None),
    }
    return render(request, "imaging/image_detail.html", context)
