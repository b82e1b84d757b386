"""ai_engine.data: training sets in the layouts people have (2D images/ +
masks/, 3D MSD and nnU-Net), every bad input refused with a message that
names the file before training starts, and MONAI loaders of the documented
shapes that augment reproducibly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from ai_engine.data import DataError, DatasetInfo, load_sample, make_loader, scan_dataset, split_samples
from tests.torch_threads import one_torch_thread


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def picture(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def lesion_mask(size: tuple[int, int] = (16, 16), *, value: int = 255, corner: int = 4) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    mask[corner : corner + 5, corner : corner + 6] = value
    return mask


def grey(size: tuple[int, int] = (16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def colour(size: tuple[int, int] = (16, 16), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def folder_set(root: Path, count: int = 4, *, rgb: bool = False, size: tuple[int, int] = (16, 16)) -> Path:
    for index in range(count):
        picture(root / "images" / f"case{index}.png", colour(size, index) if rgb else grey(size, index))
        picture(root / "masks" / f"case{index}.png", lesion_mask(size, corner=2 + index))
    return root


def volume(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return path


def phantom_arrays(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:6, 3:7, 2:5] = 1
    return image, label


def msd_set(root: Path, shapes: list[tuple[int, int, int]]) -> Path:
    training = []
    for index, shape in enumerate(shapes):
        image, label = phantom_arrays(shape, index)
        volume(root / "imagesTr" / f"case_{index:03d}.nii.gz", image)
        volume(root / "labelsTr" / f"case_{index:03d}.nii.gz", label)
        training.append(
            {"image": f"./imagesTr/case_{index:03d}.nii.gz", "label": f"./labelsTr/case_{index:03d}.nii.gz"}
        )
    manifest = {"name": "tiny", "labels": {"0": "background", "1": "tumour"}, "modality": {"0": "CT"}}
    (root / "dataset.json").write_text(json.dumps({**manifest, "training": training}))
    return root


def refused(root: Path, **options: int) -> str:
    with pytest.raises(DataError) as raised:
        scan_dataset(root, **options)
    return str(raised.value)


# ------------------------------------------------------------ refusals ---


def test_it_refuses_a_missing_folder(tmp_path: Path) -> None:
    assert "does not exist" in refused(tmp_path / "nowhere")


def test_it_refuses_an_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not a picture")
    assert f"no images found in {tmp_path.resolve() / 'images'}" in refused(tmp_path)


def test_it_refuses_a_folder_in_no_known_layout(tmp_path: Path) -> None:
    picture(tmp_path / "photo.png", grey())
    message = refused(tmp_path)
    assert "no images found" in message and "images/ and masks/" in message and "imagesTr/" in message


def test_it_names_images_without_masks_and_masks_without_images(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    picture(tmp_path / "images" / "lonely_image.png", grey())
    picture(tmp_path / "masks" / "stray_mask.png", lesion_mask())
    message = refused(tmp_path)
    assert "1 image(s)" in message and "lonely_image.png" in message
    assert "1 mask(s)" in message and "stray_mask.png" in message


def test_it_names_a_mask_whose_size_differs_from_its_image(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    picture(tmp_path / "masks" / "case1.png", lesion_mask((12, 20)))
    message = refused(tmp_path)
    assert "masks/case1.png is 20x12" in message and "images/case1.png is 16x16" in message


def test_it_refuses_an_anti_aliased_mask_in_a_binary_task(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    blurred = lesion_mask()
    blurred[3, 3:10] = 128  # a resized mask's soft edge
    picture(tmp_path / "masks" / "case0.png", blurred)
    assert "masks/case0.png has values 0, 128, 255" in refused(tmp_path)
    assert "binary task needs masks of 0/1 or 0/255" in refused(tmp_path, num_classes=2)


def test_it_refuses_class_indices_in_a_task_declared_binary(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    three_classes = lesion_mask(value=1)
    three_classes[12:14, 12:14] = 2
    picture(tmp_path / "masks" / "case1.png", three_classes)
    assert "masks/case1.png has values 0, 1, 2: a binary task" in refused(tmp_path, num_classes=2)


def test_it_refuses_mask_values_beyond_the_class_count(tmp_path: Path) -> None:
    folder_set(tmp_path, 1)
    mask = lesion_mask(value=1)
    mask[12:14, 12:14] = 3
    picture(tmp_path / "masks" / "case0.png", mask)
    assert "values 3 outside the class indices 0–2 of a 3-class task" in refused(tmp_path, num_classes=3)


def test_it_names_a_corrupt_picture(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    whole = (tmp_path / "images" / "case1.png").read_bytes()
    (tmp_path / "images" / "case1.png").write_bytes(whole[: len(whole) // 2])
    message = refused(tmp_path)
    assert "case1.png cannot be read as an image" in message and "corrupt" in message


def test_it_refuses_mixed_grey_and_colour_images(tmp_path: Path) -> None:
    folder_set(tmp_path, 3)
    picture(tmp_path / "images" / "case2.png", colour())
    message = refused(tmp_path)
    assert "mixed channel counts" in message and "1 colour (RGB), e.g. images/case2.png" in message


def test_it_lists_every_problem_at_once(tmp_path: Path) -> None:
    folder_set(tmp_path, 3)
    picture(tmp_path / "masks" / "case0.png", lesion_mask((8, 8)))
    (tmp_path / "images" / "case2.png").write_bytes(b"not a png")
    message = refused(tmp_path)
    assert message.startswith("2 problems in data set")
    assert "masks/case0.png is 8x8" in message and "case2.png cannot be read" in message


def test_it_refuses_nan_in_a_volume(tmp_path: Path) -> None:
    msd_set(tmp_path, [(8, 8, 6), (8, 8, 6)])
    image, _ = phantom_arrays((8, 8, 6))
    image[1, 1, 1] = np.nan
    image[2, 2, 2] = np.inf
    volume(tmp_path / "imagesTr" / "case_001.nii.gz", image)
    assert "image imagesTr/case_001.nii.gz holds 2 NaN or infinite voxel(s)" in refused(tmp_path)


def test_it_refuses_a_label_of_another_shape_than_its_volume(tmp_path: Path) -> None:
    msd_set(tmp_path, [(8, 8, 6)])
    volume(tmp_path / "labelsTr" / "case_000.nii.gz", np.zeros((8, 8, 5), dtype=np.uint8))
    message = refused(tmp_path)
    assert (
        "imagesTr/case_000.nii.gz has shape (8, 8, 6) but its label labelsTr/case_000.nii.gz has (8, 8, 5)" in message
    )


def test_it_names_a_corrupt_volume_and_a_listed_file_that_is_missing(tmp_path: Path) -> None:
    msd_set(tmp_path, [(8, 8, 6), (8, 8, 6)])
    (tmp_path / "imagesTr" / "case_000.nii.gz").write_bytes(b"\x1f\x8b garbage")
    (tmp_path / "labelsTr" / "case_001.nii.gz").unlink()
    message = refused(tmp_path)
    assert "case_000.nii.gz cannot be read as NIfTI" in message
    assert "dataset.json lists files that do not exist: ./labelsTr/case_001.nii.gz" in message


def test_it_refuses_a_category_that_dataset_json_does_not_declare(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    (tmp_path / "dataset.json").write_text(json.dumps({"categories": ["normal", "high-grade"]}))
    (tmp_path / "labels.csv").write_text("name,category\ncase0,normal\ncase1,cancer\n")
    assert "labels.csv uses categories that dataset.json does not declare: cancer" in refused(tmp_path)


# ------------------------------------------------------------- 2D sets ---


def test_a_good_grey_set_loads_with_0_1_masks_from_0_255(tmp_path: Path) -> None:
    info = scan_dataset(folder_set(tmp_path, 3))
    assert (info.layout, info.spatial_dims, info.in_channels, info.num_classes) == ("2d", 2, 1, 2)
    assert [sample.name for sample in info.samples] == ["case0", "case1", "case2"]
    assert info.description == "2D folder dataset, 3 images" and not info.synthetic and info.categories == ()
    image, mask = load_sample(info.samples[0], info)
    assert image.shape == (1, 16, 16) and image.dtype == np.float32
    assert np.allclose(image[0], grey((16, 16), 0) / 255.0)
    assert mask.dtype == np.int64 and set(np.unique(mask).tolist()) == {0, 1} and mask.sum() == 30


def test_colour_images_give_three_channels(tmp_path: Path) -> None:
    info = scan_dataset(folder_set(tmp_path, 2, rgb=True))
    image, _ = load_sample(info.samples[1], info)
    assert info.in_channels == 3 and image.shape == (3, 16, 16)
    assert np.allclose(image[2], colour((16, 16), 1)[..., 2] / 255.0)


def test_class_index_masks_give_a_multi_class_task(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    picture(tmp_path / "masks" / "case0.png", lesion_mask(value=1))
    mask = lesion_mask(value=1)
    mask[12:15, 12:15] = 2
    picture(tmp_path / "masks" / "case1.png", mask)
    info = scan_dataset(tmp_path)
    _, loaded = load_sample(info.samples[1], info)
    assert info.num_classes == 3 and np.array_equal(loaded, mask.astype(np.int64))


def test_jpeg_images_are_matched_with_png_masks_and_jpeg_masks_thresholded(tmp_path: Path) -> None:
    picture(tmp_path / "images" / "polyp1.jpg", colour((24, 24)))
    picture(tmp_path / "masks" / "polyp1.png", lesion_mask((24, 24)))
    picture(tmp_path / "images" / "polyp2.jpg", colour((24, 24), 2))
    picture(tmp_path / "masks" / "polyp2.jpg", lesion_mask((24, 24)))  # JPEG edges: 1, 2, 253 … (Kvasir-SEG)
    info = scan_dataset(tmp_path)
    assert [(sample.image.name, sample.mask.name) for sample in info.samples] == [
        ("polyp1.jpg", "polyp1.png"),
        ("polyp2.jpg", "polyp2.jpg"),
    ]
    _, mask = load_sample(info.samples[1], info)
    assert np.array_equal(mask, (lesion_mask((24, 24)) > 0).astype(np.int64))


def test_categories_from_labels_csv_and_describe(tmp_path: Path) -> None:
    folder_set(tmp_path, 3)
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {"name": "polyps", "description": "three cases", "categories": ["normal", "low-grade", "high-grade"]}
        )
    )
    (tmp_path / "labels.csv").write_text("name,category\ncase0.png,high-grade\ncase2,normal\n")
    info = scan_dataset(tmp_path)
    assert [sample.category for sample in info.samples] == [2, None, 0]
    summary = info.describe()
    assert json.loads(json.dumps(summary)) == summary and str(tmp_path) not in json.dumps(summary)
    assert summary["name"] == "polyps" and summary["n_images"] == 3 and summary["categories"][2] == "high-grade"
    loader = make_loader(info, info.samples, image_size=16, train=False, batch_size=3)
    assert next(iter(loader))["category"].tolist() == [2, -1, 0]


def test_the_fingerprint_follows_the_files_not_the_folder(tmp_path: Path) -> None:
    first = scan_dataset(folder_set(tmp_path / "a", 2)).describe()["sha256"]
    assert scan_dataset(folder_set(tmp_path / "b", 2)).describe()["sha256"] == first
    picture(tmp_path / "b" / "masks" / "case1.png", lesion_mask(corner=8))
    assert scan_dataset(tmp_path / "b").describe()["sha256"] != first


# ------------------------------------------------------------- 3D sets ---


def test_an_msd_set_loads_with_robust_scaling(tmp_path: Path) -> None:
    info = scan_dataset(msd_set(tmp_path, [(8, 8, 6), (10, 9, 7)]))
    assert (info.layout, info.spatial_dims, info.in_channels, info.num_classes) == ("3d", 3, 1, 2)
    assert info.class_names == ("background", "tumour") and info.name == "tiny"
    image, mask = load_sample(info.samples[1], info)
    assert image.shape == (1, 10, 9, 7) and mask.shape == (10, 9, 7) and mask.dtype == np.int64
    assert image.min() == 0.0 and image.max() == 1.0 and mask.sum() == 48


def test_an_nnunet_v2_set_with_two_channels_is_discovered(tmp_path: Path) -> None:
    for case in ("liver_001", "liver_002"):
        first, label = phantom_arrays((8, 7, 6))
        volume(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", first)
        volume(tmp_path / "imagesTr" / f"{case}_0001.nii.gz", -first)
        volume(tmp_path / "labelsTr" / f"{case}.nii.gz", label * 2)
    manifest = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    info = scan_dataset(tmp_path)
    assert [sample.name for sample in info.samples] == ["liver_001", "liver_002"]
    assert (info.in_channels, info.num_classes, info.class_names) == (2, 3, ("background", "liver", "tumour"))
    image, mask = load_sample(info.samples[0], info)
    assert image.shape == (2, 8, 7, 6) and np.allclose(image[0], 1 - image[1], atol=1e-5)
    assert set(np.unique(mask).tolist()) == {0, 2}


def test_an_nnunet_case_missing_a_channel_is_named(tmp_path: Path) -> None:
    image, label = phantom_arrays((8, 7, 6))
    volume(tmp_path / "imagesTr" / "case_0000.nii.gz", image)
    volume(tmp_path / "labelsTr" / "case.nii.gz", label)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": {}}))
    assert "declares 2 channel(s) (_0000 … _0001) but these cases have other files: case" in refused(tmp_path)


# ------------------------------------------------------------- loaders ---


def batches(info: DatasetInfo, *, train: bool, seed: int = 0, image_size: int = 16, batch_size: int = 2) -> list[dict]:
    loader = make_loader(info, info.samples, image_size=image_size, train=train, batch_size=batch_size, seed=seed)
    return list(loader)


def test_2d_loaders_yield_the_documented_shapes(tmp_path: Path) -> None:
    info = scan_dataset(folder_set(tmp_path, 3, rgb=True, size=(20, 24)))
    for train in (True, False):
        first = batches(info, train=train)[0]
        assert first["image"].shape == (2, 3, 16, 16) and first["image"].dtype == torch.float32
        assert first["label"].shape == (2, 1, 16, 16) and first["label"].dtype == torch.int64
        assert first["category"].tolist() == [-1, -1] and len(first["name"]) == 2
        assert set(first["label"].unique().tolist()) <= {0, 1}


def test_validation_is_unshuffled_and_unaugmented(tmp_path: Path) -> None:
    info = scan_dataset(folder_set(tmp_path, 3, size=(16, 16)))
    names = [name for batch in batches(info, train=False) for name in batch["name"]]
    assert names == ["case0", "case1", "case2"]
    image, mask = load_sample(info.samples[0], info)
    first = batches(info, train=False)[0]
    assert torch.allclose(first["image"][0], torch.from_numpy(image), atol=1e-6)
    assert torch.equal(first["label"][0, 0], torch.from_numpy(mask))


def test_2d_augmentation_is_the_same_for_a_seed_and_differs_for_another(tmp_path: Path) -> None:
    info = scan_dataset(folder_set(tmp_path, 4))
    first, again, other = (batches(info, train=True, seed=seed) for seed in (7, 7, 8))
    for one, two in zip(first, again, strict=True):
        assert one["name"] == two["name"]
        assert torch.equal(one["image"], two["image"]) and torch.equal(one["label"], two["label"])
    assert not all(torch.equal(one["image"], two["image"]) for one, two in zip(first, other, strict=True))


def test_3d_loaders_give_patches_for_training_and_padded_volumes_for_validation(tmp_path: Path) -> None:
    info = scan_dataset(msd_set(tmp_path, [(12, 10, 9), (12, 10, 9), (10, 9, 7)]))
    training = batches(info, train=True, image_size=8, batch_size=2)
    assert training[0]["image"].shape == (2, 1, 8, 8, 8) and training[0]["label"].shape == (2, 1, 8, 8, 8)
    validation = batches(info, train=False, image_size=8, batch_size=2)
    assert len(validation) == 3 and validation[0]["image"].shape == (1, 1, 16, 16, 16)
    assert validation[2]["label"].shape == (1, 1, 16, 16, 8) and validation[2]["label"].sum() == 48
    small = batches(info, train=True, image_size=16, batch_size=1)[0]
    assert small["image"].shape == (1, 1, 16, 16, 16)  # padded up to the patch size


def test_3d_patches_are_the_same_for_a_seed(tmp_path: Path) -> None:
    info = scan_dataset(msd_set(tmp_path, [(12, 12, 10), (12, 12, 10)]))
    first, again = (batches(info, train=True, seed=3, image_size=8) for _ in range(2))
    assert all(torch.equal(one["image"], two["image"]) for one, two in zip(first, again, strict=True))


def test_the_split_is_deterministic_disjoint_and_independent_of_order(tmp_path: Path) -> None:
    info = scan_dataset(folder_set(tmp_path, 10))
    training, validation = split_samples(info.samples, validation_fraction=0.3, seed=1)
    assert len(validation) == 3 and len(training) == 7
    assert not {sample.name for sample in training} & {sample.name for sample in validation}
    assert split_samples(list(reversed(info.samples)), validation_fraction=0.3, seed=1) == (training, validation)
    other_splits = {
        tuple(s.name for s in split_samples(info.samples, validation_fraction=0.3, seed=seed)[1]) for seed in range(5)
    }
    assert len(other_splits) > 1
    pair_training, pair_validation = split_samples(info.samples[:2], validation_fraction=0.1)
    assert len(pair_training) == 1 and len(pair_validation) == 1


def test_it_refuses_masks_that_mix_lesion_and_class_index_conventions(tmp_path: Path) -> None:
    folder_set(tmp_path, 2)
    mask = lesion_mask(value=1)
    mask[12:14, 12:14] = 2
    picture(tmp_path / "masks" / "case1.png", mask)
    assert "mix 0/255 lesion masks (masks/case0.png) with class-index masks (masks/case1.png)" in refused(tmp_path)
