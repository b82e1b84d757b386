"""Receiving uploaded files, for the API and the page's plain form alike.

A file over IMAGING_MAX_UPLOAD_BYTES is refused from its size alone: its
bytes are never read into memory. `UploadSizeGuard`, put first among a
request's upload handlers, goes further and stops keeping the bytes of such
a file as they arrive, so a very large upload does not fill the disk either;
it still counts them, so the coordinator is told how large the file was.
Every other file goes to imaging.services.image_upload, one call per file.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest

from imaging import services
from imaging.pipeline.ingest import Limits
from trial.actors import Actor
from trial.errors import DomainError, NotAllowed
from trial.models import Participant


def max_upload_bytes() -> int:
    return int(getattr(settings, "IMAGING_MAX_UPLOAD_BYTES", Limits.max_bytes))


def size_label(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size} bytes"


class OversizedUpload(UploadedFile):
    """Stands for a file that went over the limit: its name and size, no content."""

    def __init__(self, *, name: str, content_type: str, size: int, charset: str | None) -> None:
        super().__init__(io.BytesIO(), name, content_type, size, charset)


class UploadSizeGuard(FileUploadHandler):
    """Counts each file's bytes; past the limit it swallows them, so the
    handlers after it (memory, temporary file) keep no more, and the file
    arrives as an OversizedUpload."""

    def __init__(self, request: HttpRequest | None = None, *, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.received = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        return None if self.received > self.max_bytes else raw_data

    def file_complete(self, file_size: int) -> UploadedFile | None:
        if self.received <= self.max_bytes:
            return None  # the next handler holds the whole file
        return OversizedUpload(
            name=self.file_name or "upload",
            content_type=self.content_type or "application/octet-stream",
            size=self.received,
            charset=self.charset,
        )


def guard_upload_size(request: HttpRequest) -> None:
    """Call before anything reads request.POST or request.FILES."""
    request.upload_handlers = [UploadSizeGuard(request, max_bytes=max_upload_bytes()), *request.upload_handlers]


@dataclass(frozen=True)
class FileResult:
    """One file's answer, as the API returns it and the page shows it."""

    file: str
    status: str  # accepted | duplicate | rejected
    image_id: int | None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    size: int = 0  # bytes received; shown on the page, not part of the API answer
    storage_full: bool = False  # not stored for want of room on the server (the API answers 507)

    @property
    def accepted(self) -> bool:
        return self.status == services.ACCEPTED


def _too_large(size: int, limit: int) -> str:
    return (
        f"The file is {size_label(size)}, over the limit of {size_label(limit)} for one image; "
        "it was not read. Export a single series or a shorter cine loop from the ultrasound machine."
    )


def receive(*, actor: Actor, participant: Participant, files: Iterable[UploadedFile]) -> list[FileResult]:
    """Each file in turn through the upload service. Each call commits on its
    own, so one bad file never undoes the good ones before it."""
    limit = max_upload_bytes()
    results: list[FileResult] = []
    for upload in files:
        name = services.safe_name(upload.name or "upload")
        size = upload.size or 0
        if isinstance(upload, OversizedUpload) or size > limit:
            results.append(FileResult(name, services.REJECTED, None, _too_large(size, limit), size=size))
            continue
        upload.seek(0)
        data = upload.read()
        try:
            outcome = services.image_upload(actor=actor, participant=participant, name=name, data=data)
        except NotAllowed:
            raise
        except services.ImageStorageFull as error:
            results.append(FileResult(name, services.REJECTED, None, error.message, size=size, storage_full=True))
            continue
        except DomainError as error:
            results.append(FileResult(name, services.REJECTED, None, error.message, size=size))
            continue
        finally:
            upload.close()
        results.append(
            FileResult(
                name,
                outcome.status,
                outcome.image.pk if outcome.image is not None else None,
                outcome.reason,
                list(outcome.warnings),
                size=size,
            )
        )
    return results
