"""Imaging: studies, images (de-identified, content-addressed), their
de-identification records, and per-device rules for burned-in text.

Written only by imaging.services; read through imaging.selectors.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from trial.models import Participant, Site, Trial


class ImageKind(models.TextChoices):
    ULTRASOUND = "ultrasound", "Ultrasound"
    PHOTOGRAPH = "photograph", "Photograph (colposcopy)"


class ImageStatus(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    NEEDS_REVIEW = "needs_review", "Accepted, burned-in text to review"
    REJECTED = "rejected", "Rejected"


class FileFormat(models.TextChoices):
    DICOM = "dicom", "DICOM"
    JPEG = "jpeg", "JPEG"
    PNG = "png", "PNG"
    TIFF = "tiff", "TIFF"


class ImagingKey(models.Model):
    """The trial's secret for mapping DICOM UIDs: the same source UID always
    maps to the same new UID within the trial, and cannot be traced back."""

    trial = models.OneToOneField(Trial, on_delete=models.PROTECT, related_name="imaging_key")
    secret_hex = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"imaging key of {self.trial.code}"


class DeviceBlankingRule(models.Model):
    """Rows at the top of every frame that a given ultrasound machine fills
    with patient details; blanked before storage."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="blanking_rules")
    manufacturer = models.CharField(max_length=64)
    model = models.CharField(max_length=64)
    header_rows = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["trial", "manufacturer", "model"], name="blanking_rule_unique")]

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.model}: blank {self.header_rows} rows"


class ImagingStudy(models.Model):
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="imaging_studies")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=ImageKind.choices)
    study_instance_uid = models.CharField(max_length=64, blank=True, help_text="De-identified (trial-mapped) UID")
    acquisition_date = models.DateField(null=True, blank=True)
    device_manufacturer = models.CharField(max_length=64, blank=True)
    device_model = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "created_at"]
        verbose_name_plural = "imaging studies"
        indexes = [models.Index(fields=["participant", "study_instance_uid"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} study of {self.participant}"


class Image(models.Model):
    study = models.ForeignKey(ImagingStudy, on_delete=models.PROTECT, null=True, blank=True, related_name="images")
    participant = models.ForeignKey(Participant, on_delete=models.PROTECT, related_name="images")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=ImageStatus.choices)
    rejection_reason = models.TextField(blank=True)
    original_name = models.CharField(max_length=255, blank=True, help_text="Base name as uploaded, for the coordinator")
    size_bytes = models.PositiveBigIntegerField(default=0)
    source_sha256 = models.CharField(max_length=64, help_text="Digest of the bytes received (never stored)")
    sha256 = models.CharField(max_length=64, blank=True, help_text="Digest of the stored, de-identified file")
    file = models.FileField(upload_to="images/", max_length=255, blank=True)
    preview = models.FileField(upload_to="previews/", max_length=255, blank=True)
    thumbnail = models.FileField(upload_to="previews/", max_length=255, blank=True)
    frame_strip = models.FileField(upload_to="previews/", max_length=255, blank=True)
    file_format = models.CharField(max_length=8, choices=FileFormat.choices, blank=True)
    kind = models.CharField(max_length=16, choices=ImageKind.choices, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    frames = models.PositiveIntegerField(null=True, blank=True)
    key_frame = models.PositiveIntegerField(default=0)
    samples_per_pixel = models.PositiveSmallIntegerField(null=True, blank=True)
    photometric_interpretation = models.CharField(max_length=24, blank=True)
    bits_stored = models.PositiveSmallIntegerField(null=True, blank=True)
    transfer_syntax = models.CharField(max_length=80, blank=True)
    pixel_spacing_row_mm = models.FloatField(null=True, blank=True)
    pixel_spacing_column_mm = models.FloatField(null=True, blank=True)
    spacing_source = models.CharField(max_length=64, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "uploaded_at", "id"]
        constraints = [
            # The same file twice is a duplicate, not a second copy.
            models.UniqueConstraint(
                fields=["participant", "source_sha256"],
                condition=~models.Q(status="rejected"),
                name="image_once_per_participant",
            )
        ]
        indexes = [models.Index(fields=["trial", "site", "status"]), models.Index(fields=["sha256"])]

    def __str__(self) -> str:
        return f"Image {self.pk} of {self.participant} ({self.get_status_display()})"

    @property
    def is_usable(self) -> bool:
        return self.status in (ImageStatus.ACCEPTED, ImageStatus.NEEDS_REVIEW)

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        if self.pixel_spacing_row_mm is None or self.pixel_spacing_column_mm is None:
            return None
        return (self.pixel_spacing_row_mm, self.pixel_spacing_column_mm)


class DeidentificationRecord(models.Model):
    """What de-identification did to one image: attribute names only, never values."""

    image = models.OneToOneField(Image, on_delete=models.PROTECT, related_name="deidentification")
    profile = models.CharField(max_length=200)
    removed = models.JSONField(default=list)
    changed = models.JSONField(default=list)
    uids_replaced = models.PositiveIntegerField(default=0)
    private_removed = models.PositiveIntegerField(default=0)
    burned_in_annotation = models.CharField(max_length=8, blank=True)
    header_band_blanked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"De-identification of image {self.image_id}"
