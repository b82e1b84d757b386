"""What a scanned training set is: its samples and a summary that travels
with every checkpoint and model card, so a model can always be traced back to
the exact files it learned from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib


class DataError(ValueError):
    """A training set that cannot be used as it is; the message names the
    file(s) at fault and what is wrong with them."""


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path  # 3D nnU-Net sets with several channels: the first channel's file (NAME_0000)
    mask: Path
    category: int | None = None  # index into DatasetInfo.categories; None when not given


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    layout: str  # "2d" or "3d"
    spatial_dims: int
    in_channels: int  # 1 grey, 3 RGB; 3D: modalities
    num_classes: int  # including background; a binary task has 2
    samples: tuple[Sample, ...]
    description: str
    synthetic: bool
    categories: tuple[str, ...]  # image-level category names, () when none are given
    # Beyond the core fields: filled by scan_dataset, defaulted so the record
    # can also be built by hand.
    name: str = ""
    class_names: tuple[str, ...] = ()
    fingerprint: str = ""  # sha256 over (name, file sha256) pairs; computed on demand when empty

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary for checkpoints and model cards. The
        local folder path is left out on purpose: checkpoints are shared and
        a path can name a person or a hospital."""
        return {
            "name": self.name or self.root.name,
            "description": self.description,
            "layout": self.layout,
            "spatial_dims": self.spatial_dims,
            "n_images": len(self.samples),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "synthetic": self.synthetic,
            "categories": list(self.categories),
            "n_with_category": sum(1 for sample in self.samples if sample.category is not None),
            "sha256": self.fingerprint or data_fingerprint(self.samples, self.in_channels),
        }


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def channel_files(sample: Sample, in_channels: int) -> list[Path]:
    """The image files of one sample. Only nnU-Net sets keep each channel in
    its own file (NAME_0000, NAME_0001, …); everything else has one file."""
    image = sample.image
    marker = "_0000."
    if in_channels == 1 or marker not in image.name or not image.name.lower().endswith((".nii.gz", ".nii")):
        return [image]
    try:
        volume = nib.load(image)
        if isinstance(volume, nib.spatialimages.SpatialImage) and len(volume.shape) == 4:  # MSD: channels inside
            return [image]
    except Exception:  # an unreadable file is reported by whoever reads it next
        return [image]
    return [image.with_name(image.name.replace(marker, f"_{channel:04d}.", 1)) for channel in range(in_channels)]


def data_fingerprint(samples: tuple[Sample, ...] | list[Sample], in_channels: int) -> str:
    """sha256 of the sorted (name, image sha256s, mask sha256) list: the same
    files give the same fingerprint wherever the folder lives, and any
    changed, added or removed file gives another."""
    entries = sorted(
        [
            sample.name,
            [file_sha256(path) for path in channel_files(sample, in_channels)],
            file_sha256(sample.mask),
        ]
        for sample in samples
    )
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
