"""Training a segmentation network on a folder of images and masks, keeping
the epoch with the best validation Dice as a checkpoint.

The data are scanned and validated before anything else happens, so a bad
folder fails in seconds with a message naming the file, not after an hour of
training. The loss is MONAI's DiceCELoss on the segmentation; when the data
carry image-level categories and the network has a category head (the
combined network), a cross-entropy on the category is added (joint training),
weighted by CATEGORY_LOSS_WEIGHT so that the segmentation stays the main task.

The checkpoint is written once, after the last epoch: the best epoch's
weights with the whole history, so its description is complete; a run that
is interrupted writes nothing rather than a half-described file.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import monai
import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, MeanIoU
from monai.utils import set_determinism
from torch import nn
from tqdm import tqdm

from ai_engine.architectures import ARCHITECTURES, ArchitectureError, architecture_config, build_model, count_parameters
from ai_engine.checkpoint import save_checkpoint
from ai_engine.data import DatasetInfo, make_loader, scan_dataset, split_samples
from ai_engine.device import autocast_context, choose_device, prepare_images_for_device, prepare_model_for_device
from ai_engine.evaluation import predict

CATEGORY_LOSS_WEIGHT = 0.5
WEIGHT_DECAY = 1e-4
CATEGORY_ARCHITECTURES = ("combined", "kiunet")
NORMALISATION = {
    "2d": "pixel values divided by their full range (255 for 8-bit pictures, 65535 for 16-bit)",
    "3d": "per channel, min–max between the 0.5th and 99.5th percentiles, clipped to [0, 1]",
}
RESIZE = {
    "2d": "MONAI Resize, bilinear with anti-aliasing, to image_size × image_size; logits resized back bilinearly",
    "3d": "none; sliding windows of image_size³ with overlap 0.25 and Gaussian blending",
}


class TrainingError(ValueError):
    """Training settings that cannot work (before any data are read)."""


@dataclass(frozen=True)
class TrainingResult:
    checkpoint: Path
    sha256: str
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    *,
    data_dir: str | os.PathLike[str],
    arch: str,
    epochs: int,
    image_size: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    device: str | None = None,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.2,
    options: dict[str, Any] | None = None,
    max_steps_per_epoch: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Train `arch` on the data set in `data_dir` and write the best epoch's
    checkpoint to `out` (with `out.sha256` beside it)."""
    _check_settings(
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        learning_rate=learning_rate,
        validation_fraction=validation_fraction,
        max_steps_per_epoch=max_steps_per_epoch,
    )
    if arch not in ARCHITECTURES:
        raise ArchitectureError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    out_path = Path(out)
    if out_path.is_dir():
        raise TrainingError(f"--out {out_path} is a folder; give the checkpoint's file name.")
    chosen_device = choose_device(device)
    info = scan_dataset(data_dir)
    train_samples, validation_samples = split_samples(
        list(info.samples), validation_fraction=validation_fraction, seed=seed
    )
    if not train_samples or not validation_samples:
        raise TrainingError(
            f"{info.root} has {len(info.samples)} sample(s): too few to keep some for training and some for "
            f"validation (validation fraction {validation_fraction})."
        )
    # Joint training only when the network has a category head and some training image has a category to learn.
    joint = arch in CATEGORY_ARCHITECTURES and any(sample.category is not None for sample in train_samples)
    architecture = architecture_config(
        arch,
        spatial_dims=info.spatial_dims,
        in_channels=info.in_channels,
        out_channels=info.num_classes,
        num_categories=len(info.categories) if joint else 0,
        **(options or {}),
    )

    set_determinism(seed=seed)
    model = prepare_model_for_device(build_model(architecture), chosen_device, spatial_dims=info.spatial_dims)
    train_loader = make_loader(info, train_samples, image_size=image_size, train=True, batch_size=batch_size, seed=seed)
    validation_loader = make_loader(
        info, validation_samples, image_size=image_size, train=False, batch_size=batch_size, seed=seed
    )
    segmentation_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    category_loss = nn.CrossEntropyLoss(ignore_index=-1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)

    started = _now()
    log(
        f"Training {arch} ({count_parameters(model):,} parameters) on {len(train_samples)} {info.layout.upper()} "
        f"samples, validating on {len(validation_samples)}, device {chosen_device}"
        + (f", with {len(info.categories)} image categories" if joint else "")
        + "."
    )
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, Any] = {}
    total_steps = 0
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        losses: list[float] = []
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch}/{epochs}",
            total=_steps_in_epoch(train_loader, max_steps_per_epoch),
            disable=not progress,
            leave=False,
            unit="batch",
        )
        for step, batch in enumerate(bar):
            if max_steps_per_epoch is not None and step >= max_steps_per_epoch:
                break
            images = prepare_images_for_device(batch["image"], chosen_device)
            labels = batch["label"].to(chosen_device)
            optimiser.zero_grad(set_to_none=True)
            with autocast_context(chosen_device):
                if joint:
                    segmentation_logits, category_logits = _forward_with_category(model, images)
                else:
                    segmentation_logits, category_logits = model(images), None
            loss = segmentation_loss(segmentation_logits.float(), labels)
            if category_logits is not None:
                categories = batch["category"].to(chosen_device)
                if bool((categories >= 0).any()):
                    loss = loss + CATEGORY_LOSS_WEIGHT * category_loss(category_logits.float(), categories)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            total_steps += 1
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        if not losses:
            raise TrainingError("The training loader gave no batch; is the batch size larger than the data set?")
        learning_rate_used = optimiser.param_groups[0]["lr"]
        schedule.step()

        metrics = validate(
            model, validation_loader, info=info, image_size=image_size, device=chosen_device, joint=joint
        )
        record = {
            "epoch": epoch,
            "train_loss": round(float(np.mean(losses)), 6),
            **metrics,
            "learning_rate": learning_rate_used,
            "seconds": round(time.perf_counter() - epoch_started, 3),
        }
        history.append(record)
        improved = best_state is None or metrics["dice"] > best_metrics["dice"]
        log(
            f"epoch {epoch}/{epochs}  loss {record['train_loss']:.4f}  validation Dice {metrics['dice']:.4f}"
            + (f"  category accuracy {metrics['category_accuracy']:.3f}" if "category_accuracy" in metrics else "")
            + f"  ({record['seconds']:.1f} s)"
            + ("  best so far, kept" if improved else "")
        )
        if improved:
            best_state = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
            best_metrics = {"epoch": epoch, "train_loss": record["train_loss"], **metrics}

    assert best_state is not None  # epochs >= 1, and the first epoch always improves
    model.load_state_dict(best_state)
    training = {
        "data": info.describe(),
        "arch": arch,
        "epochs": epochs,
        "steps": total_steps,
        "max_steps_per_epoch": max_steps_per_epoch,
        "image_size": image_size,
        "seed": seed,
        "device": str(chosen_device),
        "mixed_precision": "bf16 autocast" if chosen_device.type == "cuda" else "none (float32)",
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "validation_fraction": validation_fraction,
        "n_train": len(train_samples),
        "n_validation": len(validation_samples),
        "validation_names": [sample.name for sample in validation_samples],
        "optimiser": f"AdamW (weight decay {WEIGHT_DECAY})",
        "schedule": f"cosine annealing over {epochs} epochs",
        "loss": "DiceCELoss(to_onehot_y, softmax)"
        + (f" + {CATEGORY_LOSS_WEIGHT} × category cross-entropy" if joint else ""),
        "parameters": count_parameters(model),
        "best_epoch": best_metrics["epoch"],
        "history": history,
        "started_utc": started,
        "finished_utc": _now(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
        },
    }
    preprocessing = {
        "image_size": image_size,
        "spatial_dims": info.spatial_dims,
        "in_channels": info.in_channels,
        "num_classes": info.num_classes,
        "layout": info.layout,
        "normalisation": NORMALISATION[info.layout],
        "resize": RESIZE[info.layout],
    }
    digest = save_checkpoint(
        out_path,
        model=model,
        architecture=architecture,
        training=training,
        metrics=best_metrics,
        preprocessing=preprocessing,
        categories=info.categories if joint else (),
    )
    log(f"Kept epoch {best_metrics['epoch']} (validation Dice {best_metrics['dice']:.4f}): {out_path}")
    log(f"sha256 {digest}")
    return TrainingResult(
        checkpoint=out_path,
        sha256=digest,
        best_epoch=int(best_metrics["epoch"]),
        best_metrics=best_metrics,
        history=history,
    )


def validate(
    model: nn.Module,
    loader: Any,
    *,
    info: DatasetInfo,
    image_size: int,
    device: torch.device,
    joint: bool,
) -> dict[str, float]:
    """Mean validation Dice and IoU over the foreground classes (an image
    without lesion predicted empty scores 1, see evaluation's conventions)
    and, for joint 2D training, the category accuracy on labelled images
    (3D validation runs on whole volumes by sliding window, where one
    image-level answer per window means nothing)."""
    model.eval()
    dice_metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    iou_metric = MeanIoU(include_background=False, reduction="mean", ignore_empty=False)
    correct = labelled = 0
    for batch in loader:
        images = batch["image"]
        if joint and info.spatial_dims == 2:
            # One pass gives both answers; the loader already resized 2D images to image_size.
            with torch.inference_mode(), autocast_context(device):
                segmentation_logits, category_logits = _forward_with_category(
                    model, prepare_images_for_device(images, device)
                )
            logits = segmentation_logits.float().cpu()
            known = batch["category"] >= 0
            if category_logits is not None and bool(known.any()):
                guessed = category_logits.float().argmax(dim=1).cpu()
                correct += int((guessed[known] == batch["category"][known]).sum())
                labelled += int(known.sum())
        else:
            logits = predict(model, images, image_size=image_size, spatial_dims=info.spatial_dims, device=device)
        predicted = _onehot(logits.argmax(dim=1, keepdim=True), info.num_classes)
        truth = _onehot(batch["label"], info.num_classes)
        dice_metric(predicted, truth)
        iou_metric(predicted, truth)
    metrics = {
        "dice": _finite(dice_metric.aggregate()),
        "iou": _finite(iou_metric.aggregate()),
    }
    if joint and labelled:
        metrics["category_accuracy"] = round(correct / labelled, 6)
    return metrics


def _forward_with_category(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The combined network's segmentation logits and image-level category logits."""
    forward = cast(Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]], model.forward_with_category)
    return forward(images)


def _onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, *S) class indices to (B, K, *S) one-hot."""
    return torch.nn.functional.one_hot(labels[:, 0].long(), num_classes).movedim(-1, 1)


def _finite(value: Any) -> float:
    number = float(torch.as_tensor(value).reshape(-1)[0])
    # With ignore_empty=False every image has a defined score, so NaN would be a defect, not an edge case.
    return round(number, 6) if math.isfinite(number) else 0.0


def _steps_in_epoch(loader: Any, max_steps_per_epoch: int | None) -> int | None:
    try:
        steps = len(loader)
    except TypeError:
        return max_steps_per_epoch
    return steps if max_steps_per_epoch is None else min(steps, max_steps_per_epoch)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _check_settings(
    *,
    epochs: int,
    image_size: int,
    batch_size: int,
    learning_rate: float,
    validation_fraction: float,
    max_steps_per_epoch: int | None,
) -> None:
    if epochs < 1:
        raise TrainingError(f"The number of epochs must be at least 1, not {epochs}.")
    if image_size < 8:
        raise TrainingError(f"The image size must be at least 8 pixels, not {image_size}.")
    if batch_size < 1:
        raise TrainingError(f"The batch size must be at least 1, not {batch_size}.")
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise TrainingError(f"The learning rate must be a positive number, not {learning_rate}.")
    if not 0 < validation_fraction < 1:
        raise TrainingError(f"The validation fraction must lie between 0 and 1, not {validation_fraction}.")
    if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
        raise TrainingError(f"The maximum steps per epoch must be at least 1, not {max_steps_per_epoch}.")
