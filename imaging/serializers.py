"""API shapes of the imaging app: images, their de-identification records,
per-file upload results, and the upload input."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from imaging.models import DeidentificationRecord, Image

# --- Output -------------------------------------------------------------------------


class ImageUrlsSerializer(serializers.Serializer):
    preview = serializers.CharField(allow_null=True)
    thumbnail = serializers.CharField(allow_null=True)
    frames = serializers.CharField(allow_null=True, help_text="Frame strip of a cine loop")
    file = serializers.CharField(allow_null=True, help_text="The de-identified file")
    page = serializers.CharField(help_text="The image's web page")


class ImageSerializer(serializers.ModelSerializer):
    """One image. `original_name` is given only where the reader may upload
    (the coordinator who needs to recognise their file): the name a file came
    under may identify the patient."""

    participant = serializers.IntegerField(source="participant_id", read_only=True)
    study_id = serializers.CharField(source="participant.study_id", read_only=True)
    # Plain strings in the schema: "status" and "kind" name other choice sets
    # elsewhere in the API.
    status = serializers.CharField(read_only=True, help_text="accepted | needs_review | rejected")
    status_label = serializers.CharField(source="get_status_display", read_only=True)
    kind = serializers.CharField(read_only=True, help_text="ultrasound | photograph (empty when rejected)")
    format = serializers.CharField(
        source="file_format", read_only=True, help_text="dicom | jpeg | png | tiff, as received (empty when rejected)"
    )
    pixel_spacing_mm = serializers.SerializerMethodField()
    uploaded_by = serializers.CharField(source="uploaded_by.username", read_only=True)
    original_name = serializers.SerializerMethodField()
    urls = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "participant",
            "study_id",
            "status",
            "status_label",
            "rejection_reason",
            "format",
            "kind",
            "rows",
            "columns",
            "frames",
            "key_frame",
            "pixel_spacing_mm",
            "spacing_source",
            "samples_per_pixel",
            "photometric_interpretation",
            "bits_stored",
            "transfer_syntax",
            "size_bytes",
            "sha256",
            "uploaded_at",
            "uploaded_by",
            "original_name",
            "urls",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.FloatField(), allow_null=True))
    def get_pixel_spacing_mm(self, image: Image) -> list[float] | None:
        """[row spacing, column spacing] in millimetres; null where unknown."""
        spacing = image.pixel_spacing_mm
        return list(spacing) if spacing is not None else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_original_name(self, image: Image) -> str | None:
        return image.original_name if self.context.get("show_original_names") else None

    @extend_schema_field(ImageUrlsSerializer)
    def get_urls(self, image: Image) -> dict[str, Any]:
        request = self.context.get("request")

        def url(name: str, present: Any) -> str | None:
            if not present:
                return None
            path = reverse(name, kwargs={"pk": image.pk})
            return request.build_absolute_uri(path) if request is not None else path

        page = reverse("imaging:image_detail", kwargs={"pk": image.pk})
        return {
            "preview": url("api-image-preview", image.preview),
            "thumbnail": url("api-image-thumbnail", image.thumbnail),
            "frames": url("api-image-frames", image.frame_strip),
            "file": url("api-image-file", image.file),
            "page": request.build_absolute_uri(page) if request is not None else page,
        }


class DeidentificationSerializer(serializers.ModelSerializer):
    """Attribute names only: never the values that were removed."""

    class Meta:
        model = DeidentificationRecord
        fields = [
            "profile",
            "removed",
            "changed",
            "uids_replaced",
            "private_removed",
            "burned_in_annotation",
            "header_band_blanked",
        ]


class StudySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    study_instance_uid = serializers.CharField(help_text="De-identified (trial-mapped) UID")
    device_manufacturer = serializers.CharField()
    device_model = serializers.CharField()


class ImageDetailSerializer(ImageSerializer):
    deidentification = serializers.SerializerMethodField()
    study = serializers.SerializerMethodField()

    class Meta(ImageSerializer.Meta):
        fields = [*ImageSerializer.Meta.fields, "study", "deidentification"]

    @extend_schema_field(DeidentificationSerializer(allow_null=True))
    def get_deidentification(self, image: Image) -> dict[str, Any] | None:
        record = getattr(image, "deidentification", None)
        return DeidentificationSerializer(record).data if record is not None else None

    @extend_schema_field(StudySerializer(allow_null=True))
    def get_study(self, image: Image) -> dict[str, Any] | None:
        return StudySerializer(image.study).data if image.study is not None else None


class UploadResultSerializer(serializers.Serializer):
    file = serializers.CharField(help_text="The file's base name as uploaded (a label, never a path)")
    status = serializers.CharField(help_text="accepted | duplicate | rejected")
    image_id = serializers.IntegerField(allow_null=True, help_text="The image taken, or the earlier one duplicated")
    reason = serializers.CharField(allow_blank=True)
    warnings = serializers.ListField(child=serializers.CharField())


class AiAnalysisSerializer(serializers.Serializer):
    """Where one image stands with the AI: the state of the work, never its output."""

    image = serializers.IntegerField(source="image_id")
    state = serializers.CharField(help_text="queued | running | done | abstained | failed | cancelled | not_analysed")
    state_label = serializers.CharField(source="label", help_text="The state in words")
    final = serializers.BooleanField(help_text="Nothing more will happen to it without someone acting")


class ParticipantAiAnalysisSerializer(serializers.Serializer):
    participant = serializers.IntegerField(source="participant.pk")
    final = serializers.BooleanField(help_text="Every image's state is final: polling may stop")
    images = AiAnalysisSerializer(many=True)


# --- Input ----------------------------------------------------------------------------


class UploadInput(serializers.Serializer):
    file = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        allow_empty=False,
        help_text="One or several files, each under the field name `file`",
    )
