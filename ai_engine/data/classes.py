"""How many classes a task has: given by the caller, declared in
dataset.json, or read off the masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ai_engine.data.problems import some
from ai_engine.data.reading import format_values, mask_to_classes, masks_are_binary
from ai_engine.data.records import DataError

# Masks whose largest value is above this hold grey levels, not class indices.
MOST_INFERRED_CLASSES = 32


def infer_num_classes(mask_values: Sequence[tuple[str, np.ndarray, bool]]) -> int:
    """Two classes when every mask is 0/1 or 0/255 (or a JPEG, which can only
    be a thresholded lesion mask); otherwise the masks are read as class
    indices 0 … K-1. mask_values: (file, unique values, lossy)."""
    class_index_masks = [(where, values) for where, values, lossy in mask_values if not lossy]
    class_index_masks = [(where, values) for where, values in class_index_masks if not masks_are_binary(values)]
    if not class_index_masks:
        return 2
    for where, values in class_index_masks:
        if int(values.max()) >= MOST_INFERRED_CLASSES:
            raise DataError(
                f"mask {where} has values {format_values(values)}, which are neither binary (0/1 or 0/255) nor "
                "class indices: a lesion mask must hold only 0/1 or 0/255 (was it resized or anti-aliased?), a "
                "multi-class mask the class numbers 0, 1, 2 … (give num_classes or 'labels' in dataset.json)."
            )
    white = [where for where, values, lossy in mask_values if lossy or (values.size and int(values.max()) == 255)]
    if white:
        raise DataError(
            f"the masks mix 0/255 lesion masks ({some(white)}) with class-index masks "
            f"({some([where for where, _ in class_index_masks])}); write them all one way."
        )
    return max(int(values.max()) + 1 for _, values in class_index_masks)


def check_mask_values(mask_values: Sequence[tuple[str, np.ndarray, bool]], num_classes: int) -> list[str]:
    """The messages for masks whose values do not fit a task of num_classes."""
    messages: list[str] = []
    for where, values, lossy in mask_values:
        try:
            mask_to_classes(values, num_classes=num_classes, lossy=lossy, where=where)
        except DataError as error:
            messages.append(str(error))
    return messages
