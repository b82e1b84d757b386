"""REST API of the imaging app, under /api/v1/.

One view per endpoint, as trial.apis: check the capability (403 for a role
without it anywhere) → read the participant or image through the selectors
(404 outside the member's sites) → call the upload service once per file →
serialize. Stored files go out only after their sha256 is checked again: an
altered file answers 409 and is logged, never served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from imaging import export, selectors, uploads
from imaging.serializers import (
    ImageDetailSerializer,
    ImageSerializer,
    ParticipantAiAnalysisSerializer,
    UploadInput,
    UploadResultSerializer,
)
from trial import selectors as trial_selectors
from trial.actors import Actor
from trial.apis import ERRORS
from trial.permissions import Capability
from trial.serializers import ErrorSerializer

logger = logging.getLogger("imaging.integrity")

INTEGRITY_MESSAGE = (
    "The stored file failed its integrity check: it no longer matches the sha256 recorded when it was "
    "uploaded (altered or damaged). It is not served; the incident is logged for the data manager."
)
WITHDRAWN_MESSAGE = "{study_id}: data withdrawn. The participant withdrew their data; their images are not exported."

FILE_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="Not logged in"),
    403: ERRORS[403],
    404: OpenApiResponse(ErrorSerializer, description="No such image within your sites, or no such rendition"),
    409: OpenApiResponse(ErrorSerializer, description="The stored file failed its integrity check"),
}


class _IgnoreAccept(BaseContentNegotiation):
    """File endpoints answer with the file whatever the Accept header says
    (an <img> asks for image/avif, a script for image/png); errors are JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


def _images_participant(request: Request, pk: int, capability: Capability) -> Any:
    trial_selectors.require_capability(request.user, capability)
    return trial_selectors.participant_get(request.user, pk)


def _integrity_failure(request: Request, failure: export.UnreadableFile) -> Response:
    logger.error(
        "Integrity check failed: image %s of %s, stored file %s, user %s, request %s: %s",
        failure.image.pk,
        failure.image.participant.study_id,
        failure.name,
        request.user.get_username(),
        getattr(request, "request_id", ""),
        failure.cause,
    )
    return Response({"detail": INTEGRITY_MESSAGE, "code": "StoredFileCorrupt"}, status=status.HTTP_409_CONFLICT)


def _not_stored(what: str) -> Response:
    return Response({"detail": f"This image has no {what}.", "code": "NotFound"}, status=status.HTTP_404_NOT_FOUND)


def _file_response(data: bytes, *, content_type: str, filename: str, disposition: str, sha256: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    response["ETag"] = f'"{sha256}"'
    # Per-user permissions: shared caches must not keep it.
    response["Cache-Control"] = "private, no-cache"
    return response


# --- A participant's images ------------------------------------------------------------


class ParticipantImagesApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        if request.method == "POST":
            uploads.guard_upload_size(request)
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        responses={200: ImageSerializer(many=True), 401: FILE_ERRORS[401], 403: ERRORS[403], 404: ERRORS[404]},
        operation_id="participant_images_list",
    )
    def get(self, request: Request, pk: int) -> Response:
        participant = _images_participant(request, pk, Capability.VIEW_IMAGES)
        images = selectors.images_of(request.user, participant).select_related("uploaded_by", "participant")
        context = {"request": request, "show_original_names": selectors.can_upload(request.user, participant)}
        return Response(ImageSerializer(images, many=True, context=context).data)

    @extend_schema(
        request={"multipart/form-data": UploadInput},
        responses={
            201: OpenApiResponse(UploadResultSerializer(many=True), description="At least one file was accepted"),
            200: OpenApiResponse(
                UploadResultSerializer(many=True), description="No file was accepted (duplicates or rejections)"
            ),
            507: OpenApiResponse(
                UploadResultSerializer(many=True),
                description="The server's image storage is full: the files it says so of were not stored",
            ),
            **ERRORS,
        },
        operation_id="participant_images_upload",
        description=(
            "One or several files under the field name `file`. Each file gets its own result: accepted, "
            "duplicate (of an image already taken for this participant) or rejected with the reason. "
            "A file over IMAGING_MAX_UPLOAD_BYTES is rejected from its size, unread."
        ),
    )
    def post(self, request: Request, pk: int) -> Response:
        participant = _images_participant(request, pk, Capability.UPLOAD_IMAGES)
        if not selectors.can_upload(request.user, participant):
            raise PermissionDenied("Your role does not upload images at this participant's site.")
        serializer = UploadInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        results = uploads.receive(
            actor=Actor.from_request(request), participant=participant, files=serializer.validated_data["file"]
        )
        answer: int = status.HTTP_201_CREATED if any(result.accepted for result in results) else status.HTTP_200_OK
        if any(result.storage_full for result in results):
            answer = status.HTTP_507_INSUFFICIENT_STORAGE
        return Response(UploadResultSerializer(results, many=True).data, status=answer)


class ParticipantImagesExportApi(APIView):
    content_negotiation_class = _IgnoreAccept

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The de-identified files and manifest.csv"
            ),
            **FILE_ERRORS,
            410: OpenApiResponse(ErrorSerializer, description="The participant withdrew their data"),
        },
        operation_id="participant_images_export",
    )
    def get(self, request: Request, pk: int) -> Response | FileResponse:
        participant = _images_participant(request, pk, Capability.EXPORT_IMAGES)
        images = selectors.exportable_images(request.user, participant)
        if participant.data_withdrawn:
            return Response(
                {"detail": WITHDRAWN_MESSAGE.format(study_id=participant.study_id), "code": "DataWithdrawn"},
                status=status.HTTP_410_GONE,
            )
        images = images.select_related("participant")
        try:
            archive = export.write_zip(images, folder=participant.study_id)
        except export.UnreadableFile as failure:
            return _integrity_failure(request, failure)
        response = FileResponse(
            archive, content_type="application/zip", as_attachment=True, filename=export.zip_name(participant.study_id)
        )
        response["Cache-Control"] = "private, no-store"
        return response


class ParticipantImagesAiStatusApi(APIView):
    @extend_schema(
        responses={
            200: ParticipantAiAnalysisSerializer,
            401: FILE_ERRORS[401],
            403: ERRORS[403],
            404: ERRORS[404],
        },
        operation_id="participant_images_ai_status",
        description=(
            "Where each of the participant's images stands with the AI (queued, running, done, abstained, "
            "failed, cancelled, not analysed): the state of the work only, never the AI's output, which only "
            "the AI arm's clinical reader sees, on the reading page. The images page polls it until `final`."
        ),
    )
    def get(self, request: Request, pk: int) -> Response:
        participant = _images_participant(request, pk, Capability.VIEW_IMAGES)
        analyses = selectors.ai_analysis_of(request.user, participant)
        data = {"participant": participant, "final": all(a.final for a in analyses), "images": analyses}
        response = Response(ParticipantAiAnalysisSerializer(data).data)
        # Polled: every answer must come from the server.
        response["Cache-Control"] = "private, no-store"
        return response


# --- One image -------------------------------------------------------------------------


class ImageDetailApi(APIView):
    @extend_schema(responses={200: ImageDetailSerializer, 401: FILE_ERRORS[401], 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, pk: int) -> Response:
        image = selectors.image_get(request.user, pk)
        context = {"request": request, "show_original_names": selectors.can_upload(request.user, image.participant)}
        return Response(ImageDetailSerializer(image, context=context).data)


class _RenditionApi(APIView):
    """A PNG made at upload: preview, thumbnail or frame strip."""

    content_negotiation_class = _IgnoreAccept
    field = ""
    suffix = ""
    label = ""

    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        image = selectors.image_get(request.user, pk)
        name = getattr(image, self.field).name
        if not name:
            return _not_stored(self.label)
        try:
            data = export.read_stored(image, self.field)
        except export.UnreadableFile as failure:
            return _integrity_failure(request, failure)
        return _file_response(
            data,
            content_type="image/png",
            filename=export.download_name(image, self.suffix),
            disposition="inline",
            sha256=export.rendition_digest(name),
        )


_PNG: dict[Any, Any] = {(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY), **FILE_ERRORS}


class ImagePreviewApi(_RenditionApi):
    field, suffix, label = "preview", "preview", "preview"

    @extend_schema(responses=_PNG, operation_id="image_preview")
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        return super().get(request, pk)


class ImageThumbnailApi(_RenditionApi):
    field, suffix, label = "thumbnail", "thumbnail", "thumbnail"

    @extend_schema(responses=_PNG, operation_id="image_thumbnail")
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        return super().get(request, pk)


class ImageFramesApi(_RenditionApi):
    field, suffix, label = "frame_strip", "frames", "frame strip (it is not a cine loop)"

    @extend_schema(responses=_PNG, operation_id="image_frames")
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        return super().get(request, pk)


class ImageFileApi(APIView):
    content_negotiation_class = _IgnoreAccept

    @extend_schema(
        responses={
            **{
                (200, media_type): OpenApiResponse(OpenApiTypes.BINARY)
                for media_type in ("application/dicom", "image/jpeg", "image/png", "image/tiff")
            },
            **FILE_ERRORS,
        },
        operation_id="image_file",
        description="The de-identified file (DICOM, JPEG, PNG or TIFF), checked against its sha256 first.",
    )
    def get(self, request: Request, pk: int) -> Response | HttpResponse:
        image = selectors.image_get(request.user, pk)
        if not image.file.name:
            return _not_stored("stored file (it was rejected)")
        try:
            data = export.read_stored(image)
        except export.UnreadableFile as failure:
            return _integrity_failure(request, failure)
        return _file_response(
            data,
            content_type=export.content_type(image),
            filename=export.download_name(image),
            disposition="attachment",
            sha256=image.sha256,
        )
