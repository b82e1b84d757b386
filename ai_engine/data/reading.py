"""Reading one image and its mask into arrays, for both the validation scan
and training. Every failure is a DataError that names the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from ai_engine.data.records import DataError, DatasetInfo, Sample, channel_files

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
# JPEG cannot store exact values: a 0/255 mask saved as JPEG comes back with
# 1, 2, 253, 254 … along every edge (Kvasir-SEG ships its masks so).
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg"})
NIFTI_SUFFIXES = (".nii.gz", ".nii")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ROBUST_PERCENTILES = (0.5, 99.5)
LOSSY_THRESHOLD = 128


def relative_name(path: Path, root: Path | None = None) -> str:
    """The path as the user knows it: relative to the data set folder when possible."""
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def format_values(values: Iterable[int | float], limit: int = 8) -> str:
    shown = [f"{value:g}" for value in list(values)[:limit]]
    more = len(list(values)) - limit
    return ", ".join(shown) + (f" … ({more} more)" if more > 0 else "")


def picture_channels(mode: str) -> int:
    return 1 if mode in GREY_MODES else 3


def read_picture_header(path: Path) -> tuple[tuple[int, int], int]:
    """(width, height) and channel count of a 2D picture, decoding it fully so
    that a truncated file is caught now rather than in the middle of training."""
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.size, picture_channels(picture.mode)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(
            f"{path} cannot be read as an image ({error}); the file is corrupt or not a picture."
        ) from error


def read_picture(path: Path, channels: int) -> np.ndarray:
    """A 2D picture as float32 (channels, height, width) in [0, 1]."""
    try:
        with Image.open(path) as picture:
            picture.load()
            if channels == 3:
                array = np.asarray(picture.convert("RGB"))
            elif picture.mode in {"1", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"}:
                array = np.asarray(picture.convert("L"))
            else:
                array = np.asarray(picture)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(
            f"{path} cannot be read as an image ({error}); the file is corrupt or not a picture."
        ) from error
    image = scale_to_unit(array)
    return image[None] if image.ndim == 2 else np.ascontiguousarray(np.moveaxis(image, -1, 0))


def scale_to_unit(array: np.ndarray) -> np.ndarray:
    """8- and 16-bit pictures by their full range (so brightness means the
    same in every image); anything else by its own robust range."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return robust_min_max(array.astype(np.float32))


def robust_min_max(array: np.ndarray) -> np.ndarray:
    """[0, 1] between the 0.5th and 99.5th percentiles, so that a few hot
    voxels (metal, contrast) do not squash the tissue into a narrow band."""
    low, high = np.percentile(array, ROBUST_PERCENTILES)
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)


def read_mask_values(path: Path) -> np.ndarray:
    """A 2D mask's raw values (height, width), before they are read as classes."""
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    try:
        with Image.open(path) as picture:
            picture.load()
            mode = picture.mode
            if mode == "1":
                return np.asarray(picture).astype(np.uint8)
            if mode == "LA":
                return np.asarray(picture.getchannel("L"))
            if mode in {"RGB", "RGBA"}:
                colour = np.asarray(picture)[..., :3]
                if (colour[..., 0] == colour[..., 1]).all() and (colour[..., 0] == colour[..., 2]).all():
                    return colour[..., 0]
                if lossy:
                    return np.asarray(picture.convert("L"))
                raise DataError(
                    f"mask {path} is a colour picture whose channels differ; a mask must be grey "
                    "(0/255 or 0/1 for lesion masks, or class indices 0, 1, 2 …)."
                )
            values = np.asarray(picture)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise DataError(f"mask {path} cannot be read ({error}); the file is corrupt or not a picture.") from error
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not (values == np.round(values)).all():
            raise DataError(f"mask {path} holds fractional values; a mask must hold whole class numbers.")
        values = values.astype(np.int64)
    return values


def masks_are_binary(values: np.ndarray) -> bool:
    present = set(values.tolist())
    return present <= {0, 1} or present <= {0, 255}


def mask_to_classes(values: np.ndarray, *, num_classes: int, lossy: bool, where: str) -> np.ndarray:
    """Raw mask values as int64 class indices; a binary mask of 0/255 becomes 0/1."""
    if num_classes == 2:
        if lossy:
            return (values >= LOSSY_THRESHOLD).astype(np.int64)
        present = np.unique(values)
        if set(present.tolist()) <= {0, 255}:
            return (values == 255).astype(np.int64)
        if set(present.tolist()) <= {0, 1}:
            return values.astype(np.int64)
        raise DataError(
            f"mask {where} has values {format_values(present)}: a binary task needs masks of 0/1 or 0/255 "
            "(was the mask resized or anti-aliased? For several classes, give num_classes or 'labels' in dataset.json)."
        )
    if lossy:
        raise DataError(
            f"mask {where} is a JPEG: class-index masks must be lossless (PNG, BMP or TIFF), "
            "because JPEG compression changes the class values along every edge."
        )
    present = np.unique(values)
    if present.size and (present.min() < 0 or present.max() >= num_classes):
        outside = [value for value in present.tolist() if value < 0 or value >= num_classes]
        raise DataError(
            f"mask {where} has values {format_values(outside)} outside the class indices 0–{num_classes - 1} "
            f"of a {num_classes}-class task."
        )
    return values.astype(np.int64)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    lowered = path.name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lowered.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def open_volume(path: Path) -> nib.spatialimages.SpatialImage:
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    try:
        volume = nib.load(path)
    except Exception as error:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error …)
        raise DataError(f"{path} cannot be read as NIfTI ({error}); the file is corrupt or not NIfTI.") from error
    if not isinstance(volume, nib.spatialimages.SpatialImage):
        raise DataError(f"{path} is not an image volume.")
    return volume


def read_volume(path: Path) -> np.ndarray:
    """The voxel data as float32, shape as stored ((X, Y, Z) or (X, Y, Z, C))."""
    volume = open_volume(path)
    try:
        return np.asarray(volume.get_fdata(dtype=np.float32))
    except Exception as error:  # a truncated .nii.gz fails only when the data are read
        raise DataError(f"{path} cannot be read as NIfTI ({error}); the file is truncated or corrupt.") from error


def read_image_volume(sample: Sample, in_channels: int) -> np.ndarray:
    """(C, X, Y, Z) float32 as stored; nnU-Net keeps one file per channel,
    MSD one 4D file with the channels last."""
    files = channel_files(sample, in_channels)
    if len(files) > 1:
        return np.stack([read_volume(path) for path in files])
    volume = read_volume(files[0])
    return volume[None] if volume.ndim == 3 else np.ascontiguousarray(np.moveaxis(volume, -1, 0))


def load_sample(sample: Sample, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    """Image float32 (C, *spatial) in [0, 1] and mask int64 (*spatial) of class
    indices. 2D pictures are divided by their full range (255 for 8-bit);
    3D volumes get a per-channel robust min–max on the 0.5/99.5 percentiles."""
    if info.layout == "2d":
        image = read_picture(sample.image, info.in_channels)
        values = read_mask_values(sample.mask)
        lossy = sample.mask.suffix.lower() in LOSSY_SUFFIXES
        mask = mask_to_classes(values, num_classes=info.num_classes, lossy=lossy, where=str(sample.mask))
    else:
        image = np.stack([robust_min_max(channel) for channel in read_image_volume(sample, info.in_channels)])
        label = read_volume(sample.mask)
        if label.ndim == 4 and label.shape[3] == 1:  # some tools write labels as (X, Y, Z, 1)
            label = label[..., 0]
        mask = mask_to_classes(
            np.rint(label).astype(np.int64), num_classes=info.num_classes, lossy=False, where=str(sample.mask)
        )
    if image.shape[1:] != mask.shape:
        raise DataError(f"{sample.image} has size {image.shape[1:]} but its mask {sample.mask} has {mask.shape}.")
    return image, mask
