"""What a file is, read from its first bytes, never from its name."""

from __future__ import annotations

from enum import StrEnum


class FileKind(StrEnum):
    DICOM = "dicom"
    JPEG = "jpeg"
    PNG = "png"
    TIFF = "tiff"


def sniff(head: bytes) -> FileKind | None:
    """The kind of file whose first bytes are `head` (at least 132 bytes for
    DICOM), or None for anything else."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return FileKind.DICOM
    if head.startswith(b"\xff\xd8\xff"):
        return FileKind.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FileKind.PNG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return FileKind.TIFF
    return None
