"""DICOM de-identification: PS3.15 Annex E, Basic Application Level
Confidentiality Profile.

The attribute table and its actions (D replace, Z empty, X remove, U replace
UID, and their combinations) come from the dicom-anonymizer package's copy
of the standard's Table E.1-1 (edition 2026c). On top of it:
- X attributes are removed and Z attributes emptied outright (the package
  would put dummy dates into both);
- every UID the profile replaces is mapped consistently per trial (a keyed
  hash of the original), so the images of one series stay together and the
  same source UID always maps to the same new one;
- patient identity is replaced by the study id;
- private attributes are removed;
- dates are removed (the profile's dummy values), the acquisition date kept
  only in the trial database;
- Patient Identity Removed and the De-identification Method are set;
- an image flagged Burned In Annotation = YES can have its top band blanked
  by a per-device rule, or is flagged for review.
The record lists which attributes were removed or changed, never values.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dicomanonymizer import simpledicomanonymizer as anonymizer
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

PROFILE_EDITION = "dicomfields_2026c"
PROFILE_NAME = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile (Table E.1-1, 2026c)"
UID_ROOT = "2.25."


@dataclass
class DeidentificationReport:
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    uids_replaced: int = 0
    private_removed: int = 0
    header_band_blanked: bool = False
    burned_in_annotation: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": PROFILE_NAME,
            "removed": sorted(set(self.removed)),
            "changed": sorted(set(self.changed)),
            "uids_replaced": self.uids_replaced,
            "private_removed": self.private_removed,
            "header_band_blanked": self.header_band_blanked,
            "burned_in_annotation": self.burned_in_annotation,
        }


def trial_uid(uid_key: bytes, original: str) -> str:
    """A new UID for `original`, the same every time for one trial: the
    integer of a keyed hash under the 2.25 root (PS3.5 B.2)."""
    digest = hmac.new(uid_key, original.encode("ascii", "replace"), hashlib.sha256).digest()
    return UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def _is_instance_uid(keyword: str, value: str, *, listed: bool = False) -> bool:
    """Instance UIDs identify a study, series or image and are replaced;
    class UIDs and registered UIDs (SOP classes, transfer syntaxes, coding
    schemes) say what something is and stay. An attribute the profile lists
    as U (`listed`) is replaced unless its value is a registered UID: a
    Manufacturer's Device Class UID, say, is vendor-assigned and traceable."""
    if not listed and (keyword.endswith(("ClassUID", "TransferSyntaxUID")) or keyword == "CodingSchemeUID"):
        return False
    return UID(value).name == value  # not in the registry of well-known UIDs


def _replace_uid_element(element: DataElement, uid_key: bytes, counter: list[int], *, listed: bool = False) -> None:
    keyword = element.keyword or ""
    if element.value in (None, "") or element.VR != "UI":
        return
    values = list(element.value) if element.VM > 1 else [element.value]
    replaced = [
        trial_uid(uid_key, str(v)) if _is_instance_uid(keyword, str(v), listed=listed) else str(v) for v in values
    ]
    if replaced != [str(v) for v in values]:
        element.value = replaced if element.VM > 1 else replaced[0]
        counter[0] += 1


def _uid_action(uid_key: bytes, counter: list[int]) -> Callable[[Dataset, Any], None]:
    """The profile's U (and U*) action: replace the UID, or the instance UIDs
    inside a sequence, consistently for the trial."""

    def replace(dataset: Dataset, tag: Any) -> None:
        element = dataset.get(tag)
        if element is None:
            return
        if element.VR == "SQ":
            for item in element.value:
                for inner in item.iterall():
                    _replace_uid_element(inner, uid_key, counter)
        else:
            _replace_uid_element(element, uid_key, counter, listed=True)

    return replace


def _remove(dataset: Dataset, tag: Any) -> None:
    """The profile's X action. dicomanonymizer's own puts a dummy date into
    DA attributes instead of removing them."""
    element = dataset.get(tag)
    if element is not None:
        del dataset[element.tag]


def _empty(dataset: Dataset, tag: Any) -> None:
    """The profile's Z action as a zero-length value: dicomanonymizer's own
    puts dummy dates and times in, and keeps the items of a sequence."""
    element = dataset.get(tag)
    if element is None:
        return
    element.value = Sequence([]) if element.VR == "SQ" else None


def _sweep_nested(dataset: Dataset, uid_key: bytes, counter: list[int]) -> list[str]:
    """Defence in depth for what the profile's top-level table does not
    reach: inside the sequences that remain, person names are emptied and
    instance UIDs mapped like the top-level ones."""
    touched = []
    for element in dataset:
        if element.VR != "SQ":
            continue
        for item in element.value:
            for inner in item.iterall():
                if inner.VR == "PN" and inner.value not in (None, ""):
                    inner.value = ""
                    touched.append(inner.keyword or "nested person name")
                elif inner.VR == "UI":
                    _replace_uid_element(inner, uid_key, counter)
    return touched


def _uid_tags() -> list[tuple[int, ...]]:
    tables = dicom_anonymization_database_selector(PROFILE_EDITION)
    return [*tables["U_TAGS"], *tables["X_Z_U_STAR_TAGS"]]


def _rules(uid_key: bytes, counter: list[int]) -> dict[tuple[int, ...], Callable[[Dataset, Any], None]]:
    """Actions replacing dicomanonymizer's for X, Z and U attributes."""
    tables = dicom_anonymization_database_selector(PROFILE_EDITION)
    rules: dict[tuple[int, ...], Callable[[Dataset, Any], None]] = {tag: _remove for tag in tables["X_TAGS"]}
    rules.update({tag: _empty for tag in tables["Z_TAGS"]})
    uid_action = _uid_action(uid_key, counter)
    rules.update({tag: uid_action for tag in _uid_tags()})
    return rules


def _snapshot(dataset: Dataset) -> dict[BaseTag, Any]:
    """Top-level and file-meta values, to tell afterwards what changed."""
    values = {element.tag: _comparable(element.value) for element in dataset}
    values.update({element.tag: _comparable(element.value) for element in dataset.file_meta})
    return values


def _comparable(value: Any) -> Any:
    if isinstance(value, Sequence):
        return repr([_comparable(list(item)) for item in value])
    if isinstance(value, bytes | bytearray):
        return hashlib.sha256(bytes(value)).hexdigest()
    return repr(value)


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or ("private " if tag.is_private else "") + f"({tag.group:04X},{tag.element:04X})"


def deidentify(
    dataset: Dataset,
    *,
    study_id: str,
    uid_key: bytes,
    blank_header_rows: int = 0,
    decoded_frames: np.ndarray | None = None,
) -> DeidentificationReport:
    """De-identify `dataset` in place and say what was done.

    `blank_header_rows` > 0 blanks that many top rows of every frame (where
    an ultrasound machine burns in patient details); the pixel data are then
    stored uncompressed from `decoded_frames`.
    """
    report = DeidentificationReport(burned_in_annotation=str(dataset.get("BurnedInAnnotation", "")).upper())
    report.private_removed = sum(1 for element in dataset.iterall() if element.tag.is_private)
    before = _snapshot(dataset)
    counter = [0]
    anonymizer.anonymize_dataset(
        dataset,
        extra_anonymization_rules=_rules(uid_key, counter),
        delete_private_tags=True,
        base_rules_gen=lambda: anonymizer.initialize_actions(PROFILE_EDITION),
    )
    nested_names = _sweep_nested(dataset, uid_key, counter)
    report.uids_replaced = counter[0]
    dataset.PatientName = study_id
    dataset.PatientID = study_id
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = PROFILE_NAME[:64]
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    dataset.DeidentificationMethodCodeSequence = Sequence([code])
    if "SOPInstanceUID" in dataset:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    if blank_header_rows > 0 and decoded_frames is not None:
        _blank_header_band(dataset, decoded_frames, blank_header_rows)
        report.header_band_blanked = True
        dataset.BurnedInAnnotation = "NO"
    after = _snapshot(dataset)
    report.removed = [_name(tag) for tag in before if tag not in after]
    report.changed = [_name(tag) for tag, value in before.items() if tag in after and after[tag] != value]
    report.changed += [_name(tag) for tag in after if tag not in before]
    report.changed += [f"{name} (in a sequence)" for name in nested_names]
    return report


def _blank_header_band(dataset: Dataset, frames: np.ndarray, rows: int) -> None:
    """Zero the top `rows` of every frame and store the pixels uncompressed
    (decoded RGB, or the original monochrome/palette values)."""
    blanked = np.array(frames, copy=True)
    blanked[:, : min(rows, blanked.shape[1]), ...] = 0
    single = blanked[0] if blanked.shape[0] == 1 else blanked
    photometric = "RGB" if blanked.ndim == 4 else str(dataset.PhotometricInterpretation)
    dataset.set_pixel_data(single, photometric, int(dataset.get("BitsStored", 8)))
