"""Evaluation of a checkpoint on a labelled data set, at each image's native
resolution.

Metrics (MONAI: DiceMetric, MeanIoU, HausdorffDistanceMetric at the 95th
percentile) are computed per image over the foreground classes and then
averaged over images. Empty masks have explicit conventions, so that an image
without a lesion counts and the JSON never holds NaN or infinity:

- truth and prediction both empty: Dice 1, IoU 1, HD95 0 (a correct
  "nothing here");
- exactly one of them empty: Dice 0, IoU 0, HD95 = the image diagonal
  (the largest distance possible in the image, in pixels/voxels).

HD95 is in pixels (voxels) at native resolution; pixel spacing is not known
for every image, so no millimetres are claimed.

Lesion-wise sensitivity counts ground-truth lesions (connected components of
the foreground, touching diagonally counts as connected) and calls a lesion
found when any predicted foreground pixel lies on it. A lesion is small when
the longest side of its bounding box at native resolution is under
`small_lesion_px`: small lesions are where a second opinion matters and where
networks that downsample aggressively fail. A sensitivity with no lesion to
find is null in the JSON rather than a made-up number.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as functional
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU
from monai.transforms import Resize
from scipy import ndimage
from torch import nn

from ai_engine.checkpoint import Checkpoint, load_checkpoint
from ai_engine.data import DatasetInfo, load_sample, scan_dataset
from ai_engine.device import autocast_context, choose_device, prepare_images_for_device, prepare_model_for_device

SLIDING_WINDOW_OVERLAP = 0.25
# The keys of the JSON `evaluate_model` writes, and only those.
JSON_KEYS = ("dice", "iou", "hd95", "lesion_sensitivity", "n_images", "per_image")
# What `evaluate` returns: the JSON's keys and a few more for the benchmark.
RESULT_KEYS = (
    "dice",
    "iou",
    "hd95",
    "lesion_sensitivity",
    "lesion_sensitivity_small",
    "lesion_sensitivity_large",
    "n_images",
    "per_image",
    "checkpoint_sha256",
    "architecture",
)


class EvaluationError(ValueError):
    """A checkpoint and a data set that cannot be evaluated together."""


# --- prediction -----------------------------------------------------------


def resize_images(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Images (B, C, H, W) to the network's input size exactly as the
    training loader resized them (MONAI Resize, bilinear, antialiased)."""
    resize = Resize(spatial_size=tuple(size), mode="bilinear", anti_aliasing=True)
    return torch.stack([torch.as_tensor(resize(image)).as_subclass(torch.Tensor) for image in images])


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Logits (B, K, H, W) back to an image's native size; interpolating the
    logits (not the label map) keeps boundaries smooth."""
    return functional.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    image_size: int,
    spatial_dims: int,
    device: torch.device,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Raw logits (B, K, *S) as float32 on the CPU for images (B, C, *S) of
    any size. 2D: resized to image_size × image_size for the network and the
    logits resized back to S. 3D: sliding windows of image_size³ over the
    whole volume (padded where it is smaller)."""
    model.eval()
    native = tuple(images.shape[2:])
    with torch.inference_mode(), autocast_context(device):
        if spatial_dims == 2:
            network_size = (image_size, image_size)
            batch = images if native == network_size else resize_images(images, network_size)
            logits = model(prepare_images_for_device(batch, device)).float()
            if native != network_size:
                logits = resize_logits(logits, native)
        else:
            logits = sliding_window_inference(
                prepare_images_for_device(images, device),
                roi_size=(image_size,) * spatial_dims,
                sw_batch_size=sw_batch_size,
                predictor=model,
                overlap=SLIDING_WINDOW_OVERLAP,
                mode="gaussian",
            )
            assert isinstance(logits, torch.Tensor)
    return logits.float().cpu()


def predict_labels(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    image_size: int,
    spatial_dims: int,
    device: torch.device,
) -> list[np.ndarray]:
    """Label maps (*S) for images (C, *S) that may differ in size; 2D images
    are batched together at the network size and each answer is returned at
    its own native size."""
    if spatial_dims != 2:
        return [
            _argmax(predict(model, image[None], image_size=image_size, spatial_dims=spatial_dims, device=device))
            for image in images
        ]
    network_size = (image_size, image_size)
    batch = torch.cat([resize_images(image[None], network_size) for image in images])
    logits = predict(model, batch, image_size=image_size, spatial_dims=2, device=device)
    return [_argmax(resize_logits(logits[index : index + 1], image.shape[1:])) for index, image in enumerate(images)]


def _argmax(logits: torch.Tensor) -> np.ndarray:
    return logits[0].argmax(dim=0).numpy()


# --- metrics --------------------------------------------------------------


def image_diagonal(shape: Sequence[int]) -> float:
    """The largest distance between two pixels of an image of this shape."""
    return math.sqrt(sum((extent - 1) ** 2 for extent in shape))


def segmentation_scores(truth: np.ndarray, predicted: np.ndarray, *, num_classes: int) -> dict[str, float]:
    """Dice, IoU and HD95 of one label map against the truth, averaged over
    the foreground classes, with the empty-mask conventions of this module."""
    if truth.shape != predicted.shape:
        raise EvaluationError(f"Prediction shape {predicted.shape} differs from the mask's {truth.shape}.")
    classes = max(num_classes, 2)
    truth_onehot = _onehot(truth, classes)
    predicted_onehot = _onehot(predicted, classes)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(predicted_onehot, truth_onehot)
    iou = MeanIoU(include_background=False, reduction="none", ignore_empty=False)(predicted_onehot, truth_onehot)
    distances = []
    for channel in range(1, classes):
        truth_present = bool(truth_onehot[:, channel].any())
        predicted_present = bool(predicted_onehot[:, channel].any())
        if not truth_present and not predicted_present:
            distances.append(0.0)
        elif truth_present != predicted_present:
            distances.append(image_diagonal(truth.shape))
        else:
            hausdorff = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
            with warnings.catch_warnings():
                # MONAI warns about its own internal use of a deprecated argument; nothing to act on here.
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
                value = hausdorff(predicted_onehot[:, channel : channel + 1], truth_onehot[:, channel : channel + 1])
            distances.append(float(torch.as_tensor(value).reshape(-1)[0]))
    return {
        "dice": float(torch.as_tensor(dice).mean()),
        "iou": float(torch.as_tensor(iou).mean()),
        "hd95": float(np.mean(distances)),
    }


def _onehot(labels: np.ndarray, classes: int) -> torch.Tensor:
    """(1, K, *S) one-hot of a label map (*S)."""
    tensor = torch.as_tensor(np.asarray(labels), dtype=torch.long).clamp(0, classes - 1)
    return functional.one_hot(tensor, classes).movedim(-1, 0)[None].to(torch.uint8)


def lesion_detection(truth_mask: np.ndarray, predicted_mask: np.ndarray, *, small_lesion_px: float) -> dict[str, Any]:
    """Which ground-truth lesions (connected foreground components, any
    non-zero label) the prediction touches. Returns counts overall and split
    into small (bounding box's longest side < small_lesion_px) and large, and
    one entry per lesion with its extent and whether it was found."""
    truth = np.asarray(truth_mask) > 0
    predicted = np.asarray(predicted_mask) > 0
    if truth.shape != predicted.shape:
        raise EvaluationError(f"Prediction shape {predicted.shape} differs from the mask's {truth.shape}.")
    connectivity = ndimage.generate_binary_structure(truth.ndim, truth.ndim)
    components, count = ndimage.label(truth, structure=connectivity)
    lesions = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        extent = max(bound.stop - bound.start for bound in box)
        region = components[box] == index
        found = bool(predicted[box][region].any())
        lesions.append({"extent_px": int(extent), "small": extent < small_lesion_px, "found": found})
    small = [lesion for lesion in lesions if lesion["small"]]
    large = [lesion for lesion in lesions if not lesion["small"]]
    return {
        "lesions": count,
        "lesions_found": sum(lesion["found"] for lesion in lesions),
        "small": len(small),
        "small_found": sum(lesion["found"] for lesion in small),
        "large": len(large),
        "large_found": sum(lesion["found"] for lesion in large),
        "per_lesion": lesions,
    }


def _proportion(found: int, total: int) -> float | None:
    return found / total if total else None


# --- the evaluation -------------------------------------------------------


def evaluate(
    *,
    data_dir: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    device: str | None = None,
    small_lesion_px: float = 10.0,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Evaluate the checkpoint on every sample of the data set; the result is
    JSON-ready (see the module's docstring for the conventions)."""
    if not small_lesion_px > 0:
        raise EvaluationError(f"The small-lesion threshold must be a positive number of pixels, not {small_lesion_px}.")
    if batch_size < 1:
        raise EvaluationError(f"The batch size must be at least 1, not {batch_size}.")
    loaded = load_checkpoint(checkpoint)
    info = scan_dataset(data_dir, num_classes=_preprocessing(loaded, "num_classes"))
    _check_compatible(loaded, info)
    chosen = choose_device(device)
    image_size = _preprocessing(loaded, "image_size")
    model = prepare_model_for_device(loaded.build_model(), chosen, spatial_dims=info.spatial_dims)

    per_image: list[dict[str, Any]] = []
    totals = {"lesions": 0, "lesions_found": 0, "small": 0, "small_found": 0, "large": 0, "large_found": 0}
    samples = list(info.samples)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        loaded_pairs = [load_sample(sample, info) for sample in chunk]
        images = [torch.as_tensor(image) for image, _ in loaded_pairs]
        predictions = predict_labels(
            model, images, image_size=image_size, spatial_dims=info.spatial_dims, device=chosen
        )
        for sample, (_, mask), predicted in zip(chunk, loaded_pairs, predictions, strict=True):
            truth = np.asarray(mask)
            scores = segmentation_scores(truth, predicted, num_classes=info.num_classes)
            detection = lesion_detection(truth, predicted, small_lesion_px=small_lesion_px)
            for key in totals:
                totals[key] += detection[key]
            per_image.append(
                {
                    "name": sample.name,
                    "dice": _rounded(scores["dice"]),
                    "iou": _rounded(scores["iou"]),
                    "hd95": _rounded(scores["hd95"]),
                    "lesions": detection["lesions"],
                    "lesions_found": detection["lesions_found"],
                    "small_lesions": detection["small"],
                    "small_lesions_found": detection["small_found"],
                    "large_lesions": detection["large"],
                    "large_lesions_found": detection["large_found"],
                }
            )
    sensitivity = _proportion(totals["lesions_found"], totals["lesions"])
    sensitivity_small = _proportion(totals["small_found"], totals["small"])
    sensitivity_large = _proportion(totals["large_found"], totals["large"])
    return {
        "dice": _rounded(np.mean([entry["dice"] for entry in per_image])),
        "iou": _rounded(np.mean([entry["iou"] for entry in per_image])),
        "hd95": _rounded(np.mean([entry["hd95"] for entry in per_image])),
        "lesion_sensitivity": _rounded(sensitivity),
        "lesion_sensitivity_small": _rounded(sensitivity_small),
        "lesion_sensitivity_large": _rounded(sensitivity_large),
        "n_images": len(per_image),
        "per_image": per_image,
        "checkpoint_sha256": loaded.sha256,
        "architecture": loaded.arch,
    }


def _preprocessing(checkpoint: Checkpoint, key: str) -> int:
    """A whole-number fact inference must repeat (image size, channels …)."""
    value = checkpoint.preprocessing.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EvaluationError(
            f"The checkpoint does not record its preprocessing {key!r} (found {value!r}); "
            "it cannot be evaluated the way it was trained."
        )
    return value


def _check_compatible(checkpoint: Checkpoint, info: DatasetInfo) -> None:
    checks = (
        ("spatial_dims", info.spatial_dims, "was trained on {expected}D data but {root} holds {found}D data"),
        ("in_channels", info.in_channels, "expects {expected} image channel(s) but {root} has {found}"),
        ("num_classes", info.num_classes, "predicts {expected} classes but the masks in {root} have {found}"),
    )
    for key, found, message in checks:
        expected = _preprocessing(checkpoint, key)
        if expected != found:
            raise EvaluationError(
                "The checkpoint " + message.format(expected=expected, found=found, root=info.root) + "."
            )


def _rounded(value: float | np.floating[Any] | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise EvaluationError("A metric came out as NaN or infinite; this is a defect in the evaluation.")
    return round(number, 6)
