"""The page's upload form: several files under one field, the plain-HTML
fallback of the drag-and-drop panel (static/js/upload.js)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

ACCEPT = ".dcm,.dicom,application/dicom,image/jpeg,image/png,image/tiff"


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A list of files. Empty files pass here: the upload service rejects
    them with its reason, like any other bad file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True, "accept": ACCEPT}))
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        single = super().clean
        if isinstance(data, list | tuple):
            if not data and self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    file = MultipleFileField(
        label="Images",
        help_text="DICOM (ultrasound or VL photographic), JPEG, PNG or TIFF; several at once.",
        error_messages={"required": "Choose at least one file."},
    )
