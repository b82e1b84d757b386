"""Every write of the imaging app: upload (accept, duplicate or reject),
device blanking rules. Each checks its rules and records an audit event in
the same transaction; files are written before the rows and removed again if
the rows cannot be written, so nothing is left half-stored."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from imaging import storage
from imaging.models import (
    DeidentificationRecord,
    DeviceBlankingRule,
    FileFormat,
    Image,
    ImageKind,
    ImageStatus,
    ImagingKey,
    ImagingStudy,
)
from imaging.pipeline.errors import Rejected
from imaging.pipeline.ingest import Limits, Processed, process
from imaging.signals import image_accepted
from trial import audit
from trial.actors import Actor
from trial.errors import DomainError, RuleViolation
from trial.models import Participant, Trial
from trial.permissions import Capability
from trial.services.checks import authorize

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
STORAGE_FULL_MESSAGE = (
    "The server's image storage is full; the image was not stored and nothing of it was kept. "
    "Tell the trial's data manager, then upload it again."
)


class ImageStorageFull(DomainError):
    """No room to store an accepted image (507 Insufficient Storage): the
    file is fine, the server is not."""

    status_code = 507


@dataclass(frozen=True)
class UploadOutcome:
    status: str  # accepted | duplicate | rejected
    image: Image | None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


def limits() -> Limits:
    return Limits(
        max_bytes=int(getattr(settings, "IMAGING_MAX_UPLOAD_BYTES", Limits.max_bytes)),
        max_pixels=int(getattr(settings, "IMAGING_MAX_PIXELS", Limits.max_pixels)),
    )


def safe_name(name: str) -> str:
    """The base name only, without control characters: a display label,
    never a path (files are stored under their sha256)."""
    base = os.path.basename(name.replace("\\", "/")) or "upload"
    return re.sub(r"[\x00-\x1f\x7f]", "", base)[:255] or "upload"


def _uid_key(trial: Trial) -> bytes:
    key, _ = ImagingKey.objects.get_or_create(trial=trial, defaults={"secret_hex": secrets.token_bytes(32).hex()})
    return bytes.fromhex(key.secret_hex)


def _participant_refusal(participant: Participant) -> str:
    from randomization.models import Allocation

    if participant.data_withdrawn:
        return f"{participant.study_id} has withdrawn their data; no images are accepted."
    if participant.ai_processing_stopped:
        return f"{participant.study_id} has withdrawn from AI processing; images are not accepted."
    if participant.follow_up_stopped:
        return f"{participant.study_id} has stopped follow-up; no new clinical data are accepted."
    if not Allocation.objects.filter(participant=participant).exists():
        return f"{participant.study_id} is not randomized yet; images are accepted after randomization."
    return ""


def _reject(*, actor: Actor, role: str, participant: Participant, name: str, data: bytes, reason: str) -> UploadOutcome:
    image = Image.objects.create(
        participant=participant,
        trial=participant.trial,
        site=participant.site,
        status=ImageStatus.REJECTED,
        rejection_reason=reason[:2000],
        original_name=name,
        size_bytes=len(data),
        source_sha256=hashlib.sha256(data).hexdigest(),
        uploaded_by=actor.user,
    )
    audit.record(
        actor=actor,
        role=role,
        action="image.reject",
        obj=image,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        after={"file": name, "size_bytes": len(data), "reason": image.rejection_reason},
    )
    return UploadOutcome(REJECTED, image, image.rejection_reason)


@transaction.atomic
def image_upload(*, actor: Actor, participant: Participant, name: str, data: bytes) -> UploadOutcome:
    """Take one file for a participant: accepted (validated, de-identified,
    stored, previewed), a duplicate of one already taken, or rejected with
    the reason. Raises only when the actor may not upload here."""
    role = authorize(actor, Capability.UPLOAD_IMAGES, trial=participant.trial, site=participant.site)
    participant = (
        Participant.objects.select_for_update(of=("self",))
        .select_related("trial", "site", "screening")
        .get(pk=participant.pk)
    )
    name = safe_name(name)
    refusal = _participant_refusal(participant)
    if refusal:
        return _reject(actor=actor, role=role, participant=participant, name=name, data=data, reason=refusal)
    source_sha256 = hashlib.sha256(data).hexdigest()
    earlier = (
        Image.objects.filter(source_sha256=source_sha256)
        .exclude(status=ImageStatus.REJECTED)
        .select_related("participant")
        .first()
    )
    if earlier is not None and earlier.participant_id == participant.pk:
        return UploadOutcome(DUPLICATE, earlier, "This file was already uploaded for this participant.")
    if earlier is not None:
        return _reject(
            actor=actor,
            role=role,
            participant=participant,
            name=name,
            data=data,
            reason="This file was already uploaded for another participant: check the participant chosen.",
        )
    bands = {
        (rule.manufacturer, rule.model): rule.header_rows
        for rule in DeviceBlankingRule.objects.filter(trial=participant.trial)
    }
    try:
        processed = process(
            data,
            indication=participant.indication,
            study_id=participant.study_id,
            uid_key=_uid_key(participant.trial),
            limits=limits(),
            header_bands=bands,
        )
    except Rejected as rejected:
        return _reject(actor=actor, role=role, participant=participant, name=name, data=data, reason=rejected.reason)
    written: list[str] = []
    try:
        image = _store_accepted(
            actor=actor, role=role, participant=participant, name=name, processed=processed, written=written
        )
    except storage.StorageFull as error:
        storage.delete_quietly(written)
        raise ImageStorageFull(STORAGE_FULL_MESSAGE) from error
    except (OSError, IntegrityError) as error:
        storage.delete_quietly(written)
        raise RuleViolation(f"The image could not be stored ({error.__class__.__name__}: {error}).") from error
    transaction.on_commit(lambda: image_accepted.send(sender=Image, image_id=image.pk))
    return UploadOutcome(ACCEPTED, image, "", processed.warnings)


def _store_accepted(
    *, actor: Actor, role: str, participant: Participant, name: str, processed: Processed, written: list[str]
) -> Image:
    def keep(data: bytes | None, extension: str, folder: str) -> str:
        if data is None:
            return ""
        stored_name, new = storage.store(data, extension, folder)
        if new:
            written.append(stored_name)
        return stored_name

    file_name = keep(processed.stored, processed.extension, "images")
    preview = keep(processed.preview, "png", "previews")
    thumbnail = keep(processed.thumbnail, "png", "previews")
    strip = keep(processed.frame_strip, "png", "previews")
    study = _study_for(participant, processed)
    with transaction.atomic():
        image = Image.objects.create(
            study=study,
            participant=participant,
            trial=participant.trial,
            site=participant.site,
            status=ImageStatus.NEEDS_REVIEW if processed.needs_review else ImageStatus.ACCEPTED,
            original_name=name,
            size_bytes=len(processed.stored),
            source_sha256=processed.source_sha256,
            sha256=processed.sha256,
            file=file_name,
            preview=preview,
            thumbnail=thumbnail,
            frame_strip=strip,
            file_format=FileFormat(processed.file_format.value),
            kind=processed.image_kind,
            rows=processed.rows,
            columns=processed.columns,
            frames=processed.frames,
            key_frame=processed.key_frame,
            samples_per_pixel=processed.samples_per_pixel,
            photometric_interpretation=processed.photometric_interpretation,
            bits_stored=processed.bits_stored,
            transfer_syntax=processed.transfer_syntax,
            pixel_spacing_row_mm=processed.pixel_spacing_mm[0] if processed.pixel_spacing_mm else None,
            pixel_spacing_column_mm=processed.pixel_spacing_mm[1] if processed.pixel_spacing_mm else None,
            spacing_source=processed.spacing_source,
            uploaded_by=actor.user,
        )
    record = processed.deidentification
    DeidentificationRecord.objects.create(
        image=image,
        profile=record.get("profile", "")[:200],
        removed=record.get("removed", []),
        changed=record.get("changed", []),
        uids_replaced=record.get("uids_replaced", 0),
        private_removed=record.get("private_removed", 0),
        burned_in_annotation=record.get("burned_in_annotation", ""),
        header_band_blanked=record.get("header_band_blanked", False),
    )
    audit.record(
        actor=actor,
        role=role,
        action="image.accept",
        obj=image,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        after={
            "file": name,
            "sha256": image.sha256,
            "format": image.file_format,
            "kind": image.kind,
            "rows": image.rows,
            "columns": image.columns,
            "frames": image.frames,
            "status": image.status,
            "deidentification": {"removed": len(record.get("removed", [])), "changed": len(record.get("changed", []))},
        },
    )
    return image


def _study_for(participant: Participant, processed: Processed) -> ImagingStudy:
    """DICOM images join the study of their (trial-mapped) Study Instance
    UID; photographs of one participant and day form one study."""
    study_uid = processed.study_instance_uid
    acquisition_date = processed.acquisition_date or timezone.localdate()
    lookup: dict[str, object] = (
        {"study_instance_uid": study_uid}
        if study_uid
        else {"study_instance_uid": "", "acquisition_date": acquisition_date, "kind": processed.image_kind}
    )
    study, _ = ImagingStudy.objects.get_or_create(
        participant=participant,
        **lookup,
        defaults={
            "trial": participant.trial,
            "site": participant.site,
            "kind": processed.image_kind,
            "acquisition_date": acquisition_date,
            "device_manufacturer": processed.manufacturer,
            "device_model": processed.model,
        },
    )
    return study


@transaction.atomic
def blanking_rule_set(
    *, actor: Actor, trial: Trial, manufacturer: str, model: str, header_rows: int
) -> DeviceBlankingRule:
    role = authorize(actor, Capability.MANAGE_TRIAL, trial=trial, site=None)
    if header_rows < 1 or header_rows > 2000:
        raise RuleViolation("The header band must be between 1 and 2000 rows.", field="header_rows")
    rule, created = DeviceBlankingRule.objects.update_or_create(
        trial=trial, manufacturer=manufacturer, model=model, defaults={"header_rows": header_rows}
    )
    audit.record(
        actor=actor,
        role=role,
        action="imaging.blanking_rule",
        obj=rule,
        trial=trial,
        after={"manufacturer": manufacturer, "model": model, "header_rows": header_rows, "created": created},
    )
    return rule


__all__ = [
    "ACCEPTED",
    "DUPLICATE",
    "REJECTED",
    "ImageKind",
    "ImageStorageFull",
    "UploadOutcome",
    "blanking_rule_set",
    "image_upload",
]
