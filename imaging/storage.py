"""Content-addressed storage through Django's storage API: a file's name is
its sha256, so the same content is stored once and any change is detected
on read. A write that fails half-way (the disk is full) leaves no partial
file behind."""

from __future__ import annotations

import errno
import hashlib
import os

from django.core.files import locks
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

# The storage has no room: the disk or the quota is full, or the file is
# over the largest the file system (or the process limit) allows.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StoredFileCorrupt(Exception):
    """A stored file no longer matches its sha256."""


class StorageFull(OSError):
    """The storage had no room for a file; nothing of it was kept."""


def content_name(data: bytes, extension: str, folder: str = "images") -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{folder}/{digest[:2]}/{digest[2:4]}/{digest}.{extension}"


def store(data: bytes, extension: str, folder: str = "images") -> tuple[str, bool]:
    """Store `data` under its content name; returns (name, newly written)."""
    name = content_name(data, extension, folder)
    if default_storage.exists(name):
        return name, False
    try:
        saved = default_storage.save(name, ContentFile(data))
    except OSError as error:
        _remove_partial(name, hashlib.sha256(data).hexdigest())
        if error.errno in NO_ROOM:
            raise StorageFull(error.errno, f"No room to store {name}") from error
        raise
    if saved != name:  # another writer stored the same content meanwhile
        default_storage.delete(saved)
        return name, False
    return name, True


def _remove_partial(name: str, sha256: str) -> None:
    """Remove what a failed write left under `name`, unless it is whole or
    another writer still holds it (the storage locks a file while writing)."""
    try:
        path = default_storage.path(name)
    except NotImplementedError:  # not a file system: nothing partial is visible
        return
    try:
        with open(path, "rb") as handle:
            if not locks.lock(handle, locks.LOCK_EX | locks.LOCK_NB):
                return
            if hashlib.sha256(handle.read()).hexdigest() != sha256:
                os.remove(path)
    except FileNotFoundError:
        return


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
