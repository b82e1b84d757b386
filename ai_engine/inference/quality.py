"""Pre-processing and the quality gate (CONSORT-AI 5(iii): how poor or
unavailable input data were assessed and handled).

The model only ever gives an opinion on a frame like those it was trained
on; anything else is refused with a reason ("abstained") instead of being
segmented, because a confident-looking mask on a blank, blurred or foreign
image would mislead a reader more than no opinion at all.

Pre-processing repeats training (ai_engine.data.reading): 8- and 16-bit
pixels divided by their full range, other integer types by theirs, floats
already in [0, 1] kept, other floats by their robust range; colour turned
grey by luminance (ITU-R 601-2, the weights the training reader's Pillow
"L" conversion uses) for a grey model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as functional
from scipy import ndimage

from ai_engine.data.reading import ROBUST_PERCENTILES
from ai_engine.inference.records import InferenceInput, QualityVerdict

# Why these values: figures were measured on [0, 1]-scaled synthetic thyroid frames (ai_engine.synthetic) at
# 128 px: contrast (standard deviation) 0.10-0.16, sharpness (variance of the Laplacian) 0.037-0.051; colposcopy
# photographs 0.0013-0.0015. A Gaussian blur of sigma 2 px brings sharpness to ~7e-5, sigma 3 to ~1e-5, sigma 6
# to ~1e-6. The thresholds refuse only frames that are clearly unusable, since every refusal costs a reader the
# second opinion.
MINIMUM_CONTRAST = 0.02  # below: blank or near-uniform (a frozen, black or saturated screen)
MINIMUM_SHARPNESS = 5e-5  # below: heavy blur (motion, defocus), about a 2.5 px Gaussian blur at 128 px
MINIMUM_SIDE_PX = 64  # below: too few pixels for a 4-level network to see a nodule's outline
# Sharpness depends on scale (a downsampled blurred image looks sharp again), so it is measured with the shorter
# side brought down to this size, the network's own input size.
SHARPNESS_SIZE = 128
# Luminance weights (ITU-R 601-2 luma), as Pillow's "L" conversion used when training pictures were read.
LUMINANCE = (0.299, 0.587, 0.114)
KEY_FRAME_STRATEGIES = ("sharpest", "middle")
CHANNELS_OF_MODALITY = {"ultrasound": 1, "photo": 3}

# Stable codes at the start of a refusal's reason.
NOT_FINITE = "not-finite"
UNSUPPORTED_LAYOUT = "unsupported-layout"
WRONG_MODALITY = "wrong-modality"
CHANNEL_MISMATCH = "channel-mismatch"
TOO_SMALL = "too-small"
BLANK = "blank"
BLURRED = "blurred"


@dataclass(frozen=True)
class PreparedFrame:
    """The key frame of an input that passed the gate, ready for the network."""

    image: torch.Tensor  # float32 (C, H, W) in [0, 1], C = the model's input channels
    frame_index: int


def check_quality(input: InferenceInput, *, expected_modality: str, key_frame: str = "sharpest") -> QualityVerdict:
    """The quality gate's verdict on one input for a model of this modality."""
    verdict, _ = assess(input, expected_modality=expected_modality, key_frame=key_frame)
    return verdict


def assess(
    input: InferenceInput, *, expected_modality: str, key_frame: str = "sharpest"
) -> tuple[QualityVerdict, PreparedFrame | None]:
    """The verdict and, when it is ok, the key frame pre-processed for a model of this modality."""
    if key_frame not in KEY_FRAME_STRATEGIES:
        raise ValueError(f"Unknown key frame strategy {key_frame!r}; use one of {', '.join(KEY_FRAME_STRATEGIES)}.")
    pixels = input.pixels
    frames, layout_problem = _as_frames(pixels)
    if frames is None:
        return _refuse(UNSUPPORTED_LAYOUT, layout_problem, {}), None
    figures: dict[str, float] = {"frames": float(frames.shape[0]), "height": float(frames.shape[1])}
    figures["width"] = float(frames.shape[2])
    figures["channels"] = float(frames.shape[3])
    if frames.dtype.kind == "f" and not np.isfinite(frames).all():
        share = float(np.mean(~np.isfinite(frames)))
        figures["not_finite_share"] = share
        return _refuse(NOT_FINITE, f"{share:.1%} of the pixels are NaN or infinite", figures), None
    if input.modality != expected_modality:
        return _refuse(
            WRONG_MODALITY, f"the image is {input.modality!r} but the model reads {expected_modality!r}", figures
        ), None
    channels = frames.shape[3]
    model_channels = CHANNELS_OF_MODALITY[expected_modality]
    if channels == 1 and model_channels == 3:
        return _refuse(
            CHANNEL_MISMATCH,
            "the image is grey but the model reads colour photographs; grey cannot become colour",
            figures,
        ), None

    low, high = _scaling_range(frames)
    sharpness = [_sharpness(_grey(_scaled(frame, low, high))) for frame in frames]
    index = int(np.argmax(sharpness)) if key_frame == "sharpest" else frames.shape[0] // 2
    scaled = _scaled(frames[index], low, high)  # (H, W, C) float32
    grey = _grey(scaled)
    figures["frame_index"] = float(index)
    figures["contrast"] = float(grey.std())
    figures["sharpness"] = sharpness[index]

    shorter_side = min(frames.shape[1], frames.shape[2])
    if shorter_side < MINIMUM_SIDE_PX:
        return _refuse(
            TOO_SMALL,
            f"the image is {frames.shape[1]} × {frames.shape[2]} px; at least {MINIMUM_SIDE_PX} px "
            "are needed on each side",
            figures,
        ), None
    if figures["contrast"] < MINIMUM_CONTRAST:
        return _refuse(
            BLANK,
            f"the frame is blank or nearly uniform (contrast {figures['contrast']:.4f}, "
            f"at least {MINIMUM_CONTRAST} needed)",
            figures,
        ), None
    if figures["sharpness"] < MINIMUM_SHARPNESS:
        return _refuse(
            BLURRED,
            f"the frame is too blurred (sharpness {figures['sharpness']:.2e}, at least {MINIMUM_SHARPNESS:.0e} needed)",
            figures,
        ), None

    network_pixels = grey[..., None] if model_channels == 1 else scaled
    image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(network_pixels, -1, 0)))
    return QualityVerdict(ok=True, reason="", figures=figures), PreparedFrame(image=image, frame_index=index)


def _refuse(code: str, words: str, figures: dict[str, float]) -> QualityVerdict:
    return QualityVerdict(ok=False, reason=f"{code}: {words}", figures=figures)


def _as_frames(pixels: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(frames, H, W, channels) view of the pixels, or None and what is wrong with them."""
    if pixels.dtype.kind not in "uif":
        return None, f"pixels of type {pixels.dtype} are not numbers an image is made of"
    shape = pixels.shape
    if pixels.ndim == 2:
        return pixels[None, :, :, None], ""
    if pixels.ndim == 3:
        # (H, W, 3) colour or (H, W, 1) grey; otherwise a grey cine loop (frames, H, W)
        return (pixels[None] if shape[-1] in (1, 3) else pixels[..., None]), ""
    if pixels.ndim == 4 and shape[-1] in (1, 3):
        return pixels, ""
    return None, (f"pixels of shape {shape} are not (H, W) grey, (H, W, 3) colour or a cine loop (frames, H, W[, 3])")


def _scaling_range(frames: np.ndarray) -> tuple[float, float]:
    """The values that become 0 and 1, for the whole loop at once, so that
    every frame of a loop is scaled alike."""
    if frames.dtype == np.uint8:
        return 0.0, 255.0
    if frames.dtype == np.uint16:
        return 0.0, 65535.0
    if frames.dtype.kind in "ui":
        info = np.iinfo(frames.dtype)
        return float(info.min), float(info.max)
    low, high = float(frames.min()), float(frames.max())
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0  # already scaled (a decoder that returns floats in [0, 1])
    low, high = (float(value) for value in np.percentile(frames, ROBUST_PERCENTILES))
    return low, high


def _scaled(frame: np.ndarray, low: float, high: float) -> np.ndarray:
    """(H, W, C) float32 in [0, 1]; a constant image (high == low) becomes all zero."""
    if high <= low:
        return np.zeros(frame.shape, dtype=np.float32)
    values = (frame.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(values, 0.0, 1.0)


def _grey(scaled: np.ndarray) -> np.ndarray:
    """(H, W) float32 from (H, W, 1) grey or (H, W, 3) colour by luminance."""
    if scaled.shape[-1] == 1:
        return scaled[..., 0]
    return (scaled @ np.asarray(LUMINANCE, dtype=np.float32)).astype(np.float32)


def _sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian with the shorter side brought down to SHARPNESS_SIZE (never enlarged: enlarging
    would make a small sharp image look blurred)."""
    shorter_side = min(grey.shape)
    if shorter_side > SHARPNESS_SIZE:
        size = _scaled_size(grey.shape, SHARPNESS_SIZE / shorter_side)
        tensor = torch.from_numpy(np.ascontiguousarray(grey))[None, None]
        smaller = functional.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
        grey = smaller[0, 0].numpy()
    return float(ndimage.laplace(grey.astype(np.float64)).var())


def _scaled_size(shape: Sequence[int], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))
