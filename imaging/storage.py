"""Content-addressed storage through Django's storage API: a file's name is
its sha256, so the same content is stored once and any change is detected
on read."""

from __future__ import annotations

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


class StoredFileCorrupt(Exception):
    """A stored file no longer matches its sha256."""


def content_name(data: bytes, extension: str, folder: str = "images") -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{folder}/{digest[:2]}/{digest[2:4]}/{digest}.{extension}"


def store(data: bytes, extension: str, folder: str = "images") -> tuple[str, bool]:
    """Store `data` under its content name; returns (name, newly written)."""
    name = content_name(data, extension, folder)
    if default_storage.exists(name):
        return name, False
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # another writer stored the same content meanwhile
        default_storage.delete(saved)
        return name, False
    return name, True


def read_verified(name: str, expected_sha256: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise StoredFileCorrupt(f"The stored file {name} does not match its sha256: it was altered or damaged.")
    return data


def delete_quietly(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            continue
