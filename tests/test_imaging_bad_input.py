"""Hostile and damaged files: each is rejected cleanly, with a reason, leaving
only the rejected Image row and its image.reject event: no exception, no
file, no half-written rows. A property-based test mutates valid files and
proves the pipeline only ever returns a result or raises Rejected, and the
upload service only ever leaves a complete accepted image or a rejected
row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from imaging import services, storage
from imaging.models import DeidentificationRecord, Image, ImageStatus, ImagingStudy
from imaging.pipeline.errors import Rejected
from imaging.pipeline.ingest import Limits, Processed, process
from tests.conftest import actor_for
from tests.imaging_files import (
    REAL_GOOD,
    jpeg_with_metadata,
    pixel_length_mismatch,
    png_bomb,
    png_with_metadata,
    random_after_preamble,
    randomized,
    real_dicom,
    ultrasound_dicom,
)
from trial.models import AuditEvent, Participant

# pydicom warns about every damaged element it meets; the rejection is what counts here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


@pytest.fixture
def thyroid(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="thyroid"), coordinator)


@pytest.fixture
def cervical(enroll: Callable[..., Participant], block_scheme: Any, coordinator: Any) -> Participant:
    return randomized(enroll(indication="cervical"), coordinator)


def stored_files() -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


BAD_FILES = {
    "zero-byte": (b"", "thyroid", "The file is empty."),
    "png-50000x50000": (png_bomb(), "cervical", "too large to process safely"),
    "pixel-length-mismatch": (pixel_length_mismatch(), "thyroid", "pixel data are shorter than the header says"),
    "random-after-dicm": (random_after_preamble(), "thyroid", "DICOM"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_rejected_cleanly(
    case: str, coordinator: Any, thyroid: Participant, cervical: Participant
) -> None:
    data, indication, reason = BAD_FILES[case]
    participant = thyroid if indication == "thyroid" else cervical
    outcome = services.image_upload(actor=actor_for(coordinator), participant=participant, name=case, data=data)
    assert outcome.status == services.REJECTED
    assert reason in outcome.reason
    image = Image.objects.get()
    assert (image.status, image.rejection_reason, image.participant) == (
        ImageStatus.REJECTED,
        outcome.reason,
        participant,
    )
    assert (image.file.name, image.preview.name, image.sha256, image.study) == ("", "", "", None)
    (event,) = AuditEvent.objects.filter(action__startswith="image.")
    assert (event.action, event.object_id) == ("image.reject", str(image.pk))
    assert not ImagingStudy.objects.exists()
    assert not DeidentificationRecord.objects.exists()
    assert stored_files() == set()


def test_random_bytes_after_a_dicom_preamble_are_named_as_not_an_image() -> None:
    with pytest.raises(Rejected) as caught:
        process(random_after_preamble(), indication="thyroid", study_id="C01-0001", uid_key=b"k", limits=Limits())
    assert caught.value.reason.startswith(("Not a valid DICOM", "The DICOM file"))


def test_a_path_in_the_name_is_only_a_label(coordinator: Any, thyroid: Participant, tmp_path: Path) -> None:
    outcome = services.image_upload(
        actor=actor_for(coordinator), participant=thyroid, name="../../x.dcm", data=real_dicom("examples_rgb_color.dcm")
    )
    assert outcome.status == services.ACCEPTED
    image = outcome.image
    assert image is not None and image.original_name == "x.dcm"
    assert image.file.name == f"images/{image.sha256[:2]}/{image.sha256[2:4]}/{image.sha256}.dcm"
    media = Path(settings.MEDIA_ROOT).resolve()
    for name in stored_files():
        assert (media / name).resolve().is_relative_to(media)
    assert not list(tmp_path.parent.rglob("x.dcm"))


def test_a_windows_path_and_control_characters_in_the_name_are_dropped(coordinator: Any, thyroid: Participant) -> None:
    outcome = services.image_upload(
        actor=actor_for(coordinator), participant=thyroid, name="..\\..\\evil\x00\n.dcm", data=b""
    )
    assert outcome.image is not None and outcome.image.original_name == "evil.dcm"


# --- Property: mutated valid files --------------------------------------------

PIPELINE_SOURCES: dict[str, tuple[bytes, str]] = {
    **{name: (real_dicom(name), "thyroid") for name in sorted(REAL_GOOD)},
    "jpeg": (jpeg_with_metadata(), "cervical"),
    "png": (png_with_metadata(), "cervical"),
}
# The upload property leaves out the 30-frame cine to keep the suite fast;
# the pipeline property covers it.
UPLOAD_SOURCES: dict[str, tuple[bytes, str]] = {
    "examples_rgb_color.dcm": PIPELINE_SOURCES["examples_rgb_color.dcm"],
    "examples_palette.dcm": PIPELINE_SOURCES["examples_palette.dcm"],
    "examples_jpeg2k.dcm": PIPELINE_SOURCES["examples_jpeg2k.dcm"],
    "ultrasound-16-bit": (ultrasound_dicom(monochrome_bits=16, frames=2), "thyroid"),
    "jpeg": PIPELINE_SOURCES["jpeg"],
    "png": PIPELINE_SOURCES["png"],
}

_mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate"]),
    st.integers(min_value=0, max_value=2**31),  # where (modulo the length)
    st.booleans(),  # in the header (first 2 KiB), where most of the structure is
    st.binary(min_size=1, max_size=8),  # inserted bytes
    st.integers(min_value=1, max_value=64),  # bytes deleted
    st.integers(min_value=0, max_value=7),  # bit flipped
)


@st.composite
def mutated(draw: st.DrawFn, sources: dict[str, tuple[bytes, str]]) -> tuple[str, bytes, str]:
    name = draw(st.sampled_from(sorted(sources)))
    original, indication = sources[name]
    data = bytearray(original)
    for kind, where, header, inserted, deleted, bit in draw(st.lists(_mutation, min_size=1, max_size=4)):
        if not data:
            break
        position = where % (min(len(data), 2048) if header else len(data))
        if kind == "flip":
            data[position] ^= 1 << bit
        elif kind == "insert":
            data[position:position] = inserted
        elif kind == "delete":
            del data[position : position + deleted]
        else:
            del data[position:]
    return name, bytes(data), indication


PROPERTY_SETTINGS = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(mutated(PIPELINE_SOURCES))
def test_the_pipeline_returns_a_result_or_rejects_a_mutated_file(case: tuple[str, bytes, str]) -> None:
    _, data, indication = case
    try:
        result = process(data, indication=indication, study_id="C01-0001", uid_key=b"k", limits=Limits())
    except Rejected as rejected:
        assert rejected.reason
        event("rejected")
        return
    event("accepted")
    assert isinstance(result, Processed)
    assert result.stored and result.preview.startswith(b"\x89PNG") and result.thumbnail.startswith(b"\x89PNG")
    assert result.rows > 0 and result.columns > 0 and result.frames > 0


def _referenced_files() -> set[str]:
    names: set[str] = set()
    for image in Image.objects.exclude(status=ImageStatus.REJECTED):
        names |= {field.name for field in (image.file, image.preview, image.thumbnail, image.frame_strip) if field}
    return names


@PROPERTY_SETTINGS
@given(case=mutated(UPLOAD_SOURCES))
def test_an_upload_of_a_mutated_file_is_complete_or_rejected(
    case: tuple[str, bytes, str], coordinator: Any, thyroid: Participant, cervical: Participant
) -> None:
    _, data, indication = case
    participant = thyroid if indication == "thyroid" else cervical
    before = set(Image.objects.values_list("pk", flat=True))
    outcome = services.image_upload(actor=actor_for(coordinator), participant=participant, name="mutated", data=data)
    new = list(Image.objects.exclude(pk__in=before))
    event(outcome.status)
    if outcome.status == services.DUPLICATE:
        assert new == []
        assert outcome.image is not None and outcome.image.is_usable
    else:
        assert [image.pk for image in new] == [outcome.image.pk if outcome.image else None]
        image = new[0]
        events = AuditEvent.objects.filter(object_id=str(image.pk), action__startswith="image.")
        if outcome.status == services.ACCEPTED:
            assert image.is_usable and image.study is not None
            assert storage.read_verified(image.file.name, image.sha256)  # on disk, sha256 matches
            assert image.preview.name and image.thumbnail.name
            assert DeidentificationRecord.objects.filter(image=image).exists()
            assert [event.action for event in events] == ["image.accept"]
        else:
            assert outcome.status == services.REJECTED
            assert image.status == ImageStatus.REJECTED and image.rejection_reason
            assert (image.file.name, image.sha256, image.study) == ("", "", None)
            assert not DeidentificationRecord.objects.filter(image=image).exists()
            assert [event.action for event in events] == ["image.reject"]
    # Nothing stored that no accepted image refers to, nothing referred to that is missing.
    assert stored_files() == _referenced_files()
