"""The inference engine: one checkpoint loaded once, then any number of
decoded images judged in micro-batches.

Two ways to bring a frame to the network, chosen by the checkpoint
(preprocessing["inference"]) or by the operator:

* "resize" (the default, and what the shipped checkpoints need): the frame
  is resized to image_size, as the 2D training loader did with whole frames
  (ai_engine.training), and the logits are resized back to the frame's
  native size, as ai_engine.evaluation does. Sliding windows would show such
  a model nodules far bigger and speckle far coarser than it was trained on.
* "sliding_window": for checkpoints trained on patches at native
  resolution, MONAI's SlidingWindowInferer runs image_size windows over
  the native frame (Gaussian-weighted overlap, sw_batch_size = max_batch),
  so an image larger than the training size is judged at full detail. The
  suggested category still comes from the whole frame resized.

3D checkpoints (volumes) are refused here: the trial reads 2D frames and
cine loops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from ai_engine.checkpoint import load_checkpoint
from ai_engine.device import autocast_context, choose_device, prepare_images_for_device, prepare_model_for_device
from ai_engine.evaluation import resize_images, resize_logits
from ai_engine.inference.measurements import lesion_mask, lesion_probability, measure_lesions
from ai_engine.inference.quality import KEY_FRAME_STRATEGIES, PreparedFrame, assess
from ai_engine.inference.records import (
    STATUS_ABSTAINED,
    STATUS_DONE,
    InferenceError,
    InferenceInput,
    InferenceResult,
    QualityVerdict,
)

_T = TypeVar("_T")
MODALITY_OF_CHANNELS = {1: "ultrasound", 3: "photo"}
INFERENCE_MODES = ("resize", "sliding_window")


@dataclass
class _Admitted:
    """An input that passed the gate, waiting for its forward pass."""

    position: int
    input: InferenceInput
    verdict: QualityVerdict
    frame: PreparedFrame
    milliseconds: float


class InferenceEngine:
    def __init__(
        self,
        checkpoint_path: str | os.PathLike[str],
        *,
        device: str | None = None,
        threshold: float = 0.5,
        min_component_px: int = 4,
        max_batch: int = 8,
        key_frame: str = "sharpest",
        inference_mode: str | None = None,
        window_overlap: float | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise InferenceError(f"The threshold must lie between 0 and 1, got {threshold}.")
        if min_component_px < 0 or max_batch < 1:
            raise InferenceError("min_component_px must be 0 or more and max_batch 1 or more.")
        if key_frame not in KEY_FRAME_STRATEGIES:
            raise InferenceError(f"Unknown key frame strategy {key_frame!r}; use one of {KEY_FRAME_STRATEGIES}.")
        checkpoint = load_checkpoint(checkpoint_path)  # refuses a file whose sha256 does not match its side file
        preprocessing = checkpoint.preprocessing
        if int(preprocessing.get("spatial_dims", 2)) != 2:
            raise InferenceError(
                f"Checkpoint {checkpoint_path} is a 3D model; this engine judges 2D frames and cine loops only."
            )
        in_channels = int(preprocessing["in_channels"])
        if in_channels not in MODALITY_OF_CHANNELS:
            raise InferenceError(f"Checkpoint {checkpoint_path} reads {in_channels} channels; 1 or 3 are supported.")
        self.sha256 = checkpoint.sha256
        self.modality = MODALITY_OF_CHANNELS[in_channels]
        self.categories = checkpoint.categories
        self.image_size = int(preprocessing["image_size"])
        self.threshold = threshold
        self.min_component_px = min_component_px
        self.max_batch = max_batch
        self.key_frame = key_frame
        self.inference_mode = inference_mode or str(preprocessing.get("inference", "resize"))
        if self.inference_mode not in INFERENCE_MODES:
            raise InferenceError(
                f"Unknown inference mode {self.inference_mode!r}; use one of {', '.join(INFERENCE_MODES)}."
            )
        overlap = float(window_overlap if window_overlap is not None else preprocessing.get("window_overlap", 0.25))
        if not 0.0 <= overlap < 1.0:
            raise InferenceError(f"The window overlap must be at least 0 and below 1, got {overlap}.")
        self._inferer = SlidingWindowInferer(
            roi_size=(self.image_size, self.image_size), sw_batch_size=max_batch, overlap=overlap, mode="gaussian"
        )
        self._device = choose_device(device)
        self.device_label = str(self._device)
        self._model = prepare_model_for_device(checkpoint.build_model(), self._device, spatial_dims=2)

    @property
    def device(self) -> str:
        return self.device_label

    def run(self, inputs: Sequence[InferenceInput]) -> list[InferenceResult]:
        """One result per input, in input order. Inputs that pass the quality
        gate go through the network in forward passes of at most max_batch
        frames; the others abstain without touching the network."""
        results: list[InferenceResult | None] = [None] * len(inputs)
        admitted: list[_Admitted] = []
        for position, item in enumerate(inputs):
            started = time.perf_counter()
            verdict, frame = assess(item, expected_modality=self.modality, key_frame=self.key_frame)
            milliseconds = (time.perf_counter() - started) * 1000
            if frame is None:
                results[position] = self._abstained(verdict, milliseconds)
            else:
                admitted.append(_Admitted(position, item, verdict, frame, milliseconds))
        for start in range(0, len(admitted), self.max_batch):
            batch = admitted[start : start + self.max_batch]
            for entry, result in zip(batch, self._run_batch(batch), strict=True):
                results[entry.position] = result
        return [result for result in results if result is not None]

    def _run_batch(self, batch: list[_Admitted]) -> list[InferenceResult]:
        network_size = (self.image_size, self.image_size)
        started = time.perf_counter()
        images = torch.cat([resize_images(entry.frame.image[None], network_size) for entry in batch])
        segmentation, category = self._forward(images)
        share_ms = (time.perf_counter() - started) * 1000 / len(batch)
        results = []
        for index, entry in enumerate(batch):
            started = time.perf_counter()
            native = tuple(entry.frame.image.shape[1:])
            if self.inference_mode == "sliding_window":
                logits = self._on_device(partial(self._windows_on_device, entry.frame.image))
            else:
                logits = resize_logits(segmentation[index : index + 1], native)[0]
            probability = lesion_probability(logits)
            mask = lesion_mask(probability, threshold=self.threshold, min_component_px=self.min_component_px)
            measurements = measure_lesions(mask, pixel_spacing_mm=entry.input.pixel_spacing_mm, probability=probability)
            suggestion = self._category(category[index] if category is not None else None)
            own_ms = (time.perf_counter() - started) * 1000
            results.append(
                InferenceResult(
                    status=STATUS_DONE,
                    reason="",
                    quality=entry.verdict,
                    mask=mask,
                    probability=probability.astype(np.float16),
                    frame_index=entry.frame.frame_index,
                    measurements=measurements,
                    category=suggestion[0],
                    category_probability=suggestion[1],
                    category_probabilities=suggestion[2],
                    model_sha256=self.sha256,
                    device=self.device_label,
                    runtime_ms=entry.milliseconds + share_ms + own_ms,
                )
            )
        return results

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segmentation logits (B, K, S, S) and category logits (B, N) or None,
        float32 on the CPU."""
        return self._on_device(lambda: self._forward_on_device(images))

    def _on_device(self, work: Callable[[], _T]) -> _T:
        """Run work on the engine's device. A GPU that runs out of memory or
        fails hands the work to the CPU for the rest of this engine's life,
        and results say so."""
        try:
            return work()
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError too
            if self._device.type != "cuda":
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self._model = prepare_model_for_device(self._model, torch.device("cpu"), spatial_dims=2)
            self._device = torch.device("cpu")
            self.device_label = f"cpu (fallback from cuda: {reason})"
            torch.cuda.empty_cache()
            return work()

    def _windows_on_device(self, image: torch.Tensor) -> torch.Tensor:
        """Segmentation logits (K, H, W) of one native-size frame (C, H, W)
        from sliding windows of the network size, float32 on the CPU."""
        with torch.inference_mode(), autocast_context(self._device):
            batch = prepare_images_for_device(image[None], self._device)
            logits = self._inferer(batch, self._model)
        assert isinstance(logits, torch.Tensor)
        return logits.float().cpu()[0]

    def _forward_on_device(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        forward_with_category = getattr(self._model, "forward_with_category", None)
        with torch.inference_mode(), autocast_context(self._device):
            batch = prepare_images_for_device(images, self._device)
            if callable(forward_with_category) and self.categories:
                segmentation, category = forward_with_category(batch)
            else:
                segmentation, category = self._model(batch), None
        return segmentation.float().cpu(), (category.float().cpu() if category is not None else None)

    def _category(self, logits: torch.Tensor | None) -> tuple[str | None, float | None, dict[str, float]]:
        if logits is None or logits.numel() != len(self.categories):
            return None, None, {}
        probabilities = torch.softmax(logits, dim=0).tolist()
        best = int(np.argmax(probabilities))
        return self.categories[best], float(probabilities[best]), dict(zip(self.categories, probabilities, strict=True))

    def _abstained(self, verdict: QualityVerdict, milliseconds: float) -> InferenceResult:
        frame_index = verdict.figures.get("frame_index")
        measurements: dict[str, Any] = {}
        return InferenceResult(
            status=STATUS_ABSTAINED,
            reason=verdict.reason,
            quality=verdict,
            mask=None,
            probability=None,
            frame_index=int(frame_index) if frame_index is not None else None,
            measurements=measurements,
            category=None,
            category_probability=None,
            category_probabilities={},
            model_sha256=self.sha256,
            device=self.device_label,
            runtime_ms=milliseconds,
        )
