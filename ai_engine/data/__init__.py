"""Training data in the layouts people already have, checked before use.

2D (Kvasir-SEG / CVC): ROOT/images/ and ROOT/masks/ with matching names;
masks 0/255, 0/1 or class indices; optional ROOT/dataset.json ("name",
"description", "synthetic", "labels", "categories") and ROOT/labels.csv
(name,category: an image-level category per image).
3D (Medical Segmentation Decathlon / nnU-Net v2): ROOT/dataset.json with a
"training" list, or "channel_names"/"file_ending" and imagesTr/CASE_0000.nii.gz,
labelsTr/CASE.nii.gz.

scan_dataset checks every file and returns a DatasetInfo; load_sample reads
one sample; split_samples and make_loader prepare training."""

from ai_engine.data.loaders import make_loader, split_samples
from ai_engine.data.reading import load_sample
from ai_engine.data.records import DataError, DatasetInfo, Sample
from ai_engine.data.scan import scan_dataset

__all__ = [
    "DataError",
    "DatasetInfo",
    "Sample",
    "load_sample",
    "make_loader",
    "scan_dataset",
    "split_samples",
]
