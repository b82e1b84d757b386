"""What leaves the system: stored files read back with their integrity
checked, their download names, and the zip export of a participant's images.

Names are built from the study id and the image id only. The name a file was
uploaded under may carry a patient's name or a hospital number, so it never
appears in a download name, a zip entry or a manifest.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import zipfile
from collections.abc import Iterable
from typing import IO

from imaging import storage
from imaging.models import Image

# By the stored file's extension, not the format received: a TIFF is stored
# as a lossless PNG once its tags are stripped.
CONTENT_TYPES = {
    "dcm": "application/dicom",
    "jpg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
}

MANIFEST_COLUMNS = [
    "image_id",
    "file",
    "sha256",
    "format",
    "kind",
    "status",
    "rows",
    "columns",
    "frames",
    "pixel_spacing_row_mm",
    "pixel_spacing_column_mm",
    "spacing_source",
    "transfer_syntax",
]

_DIGEST_IN_NAME = re.compile(r"([0-9a-f]{64})\.[A-Za-z0-9]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-.") or "participant"


def _stored_extension(image: Image) -> str:
    extension = str(image.file.name).rsplit(".", 1)[-1].lower() if "." in str(image.file.name) else ""
    return extension if extension in CONTENT_TYPES else "bin"


def download_name(image: Image, suffix: str = "") -> str:
    """E.g. `CONS-C01-0007_image-42.dcm` or `CONS-C01-0007_image-42_preview.png`."""
    stem = f"{_safe(image.participant.study_id)}_image-{image.pk}"
    if suffix:
        return f"{stem}_{suffix}.png"
    return f"{stem}.{_stored_extension(image)}"


def content_type(image: Image) -> str:
    return CONTENT_TYPES.get(_stored_extension(image), "application/octet-stream")


class UnreadableFile(Exception):
    """A stored file that does not match its sha256 any more, or is gone."""

    def __init__(self, image: Image, name: str, cause: Exception) -> None:
        super().__init__(f"image {image.pk}: {name}: {cause}")
        self.image = image
        self.name = name
        self.cause = cause


def rendition_digest(name: str) -> str:
    """The sha256 a preview, thumbnail or frame strip is stored under
    (imaging.storage.content_name)."""
    match = _DIGEST_IN_NAME.search(name)
    return match.group(1) if match else ""


def read_stored(image: Image, field: str = "file") -> bytes:
    """The de-identified file (`file`) or one of its renditions (`preview`,
    `thumbnail`, `frame_strip`), checked against its sha256 on the way out:
    the digest recorded at upload for the file, the content name for the
    renditions. Raises UnreadableFile."""
    name = str(getattr(image, field).name)
    expected = image.sha256 if field == "file" else rendition_digest(name)
    try:
        if not expected:
            raise storage.StoredFileCorrupt(f"The stored file {name} has no digest to check it against.")
        return storage.read_verified(name, expected)
    except (storage.StoredFileCorrupt, OSError) as error:
        raise UnreadableFile(image, name, error) from error


def zip_name(study_id: str) -> str:
    return f"{_safe(study_id)}_images.zip"


def _manifest_row(image: Image, entry: str) -> list[str]:
    values: list[object] = [
        image.pk,
        entry,
        image.sha256,
        image.file_format,
        image.kind,
        image.status,
        image.rows,
        image.columns,
        image.frames,
        image.pixel_spacing_row_mm,
        image.pixel_spacing_column_mm,
        image.spacing_source,
        image.transfer_syntax,
    ]
    return ["" if value is None else str(value) for value in values]


def write_zip(images: Iterable[Image], *, folder: str) -> IO[bytes]:
    """A zip of the images' de-identified files under `folder/`, with a
    manifest.csv; every file is verified against its sha256 before it is
    added, so an export never carries an altered file. Written to a
    temporary file (exports can be large); the caller closes it."""
    target = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the response, which closes it
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for image in images:
                entry = f"{_safe(folder)}/{download_name(image)}"
                data = read_stored(image)
                stamp = image.uploaded_at.timetuple()[:6]
                archive.writestr(zipfile.ZipInfo(entry, date_time=stamp), data, compress_type=zipfile.ZIP_DEFLATED)
                writer.writerow(_manifest_row(image, entry))
            archive.writestr("manifest.csv", manifest.getvalue())
    except BaseException:
        target.close()
        raise
    target.seek(0)
    return target
