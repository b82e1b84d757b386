#!/usr/bin/env python
"""Benchmark: the pure imaging pipeline (imaging.pipeline.ingest.process) on
a 30-frame ultrasound cine (pydicom's examples_ybr_color.dcm, JPEG baseline
YBR) and on a 12-megapixel camera photo (a 4000 × 3000 JPEG synthesised
here, with EXIF, GPS, XMP and a comment).

    python bench/ingest.py [--repeat 10]

Each case runs in a fresh Python process, so that ru_maxrss (the process's
high-water mark) belongs to that case alone; the photo is synthesised in
another one, and this parent process stays small because Linux carries the
high-water mark over an exec. In a case's process: a small warm-up file of
the same kind (so decoders are loaded), then one call measured by ru_maxrss,
one under tracemalloc, then --repeat timed calls.

Prints per case: images/s, the decoded image size (rows × columns × frames ×
samples × bytes per sample), the tracemalloc peak and the growth of
ru_maxrss during one call, each with its ratio to the decoded size (the
pipeline should hold no more than a few copies of one decoded image), and
the absolute ru_maxrss. tracemalloc sees Python and NumPy allocations;
Pillow's own image buffers only show in ru_maxrss. The last line is one JSON
object with the same figures. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import io
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CINE = "examples_ybr_color.dcm"
CASES = {
    "cine": "ultrasound cine, 30 × 240 × 320 YBR JPEG (examples_ybr_color.dcm)",
    "photo": "camera photo, 4000 × 3000 JPEG with EXIF/GPS/XMP",
}
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xap="http://ns.adobe.com/xap/1.0/" xap:CreatorTool="bench"/></rdf:RDF></x:xmpmeta>'
)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="Timed calls per case.")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--synthesise", metavar="PATH", help=argparse.SUPPRESS)  # write the photo
    arguments = parser.parse_args()
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")
    return arguments


def synthetic_photo(width: int, height: int, *, quality: int = 92) -> bytes:
    """A camera-like JPEG: smooth gradients with sensor noise, and the
    metadata a camera writes (EXIF with GPS and a maker note, XMP, a
    comment). Built row band by row band to keep this process small."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(12)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    columns = (np.arange(width, dtype=np.uint32) * 255 // max(1, width - 1)).astype(np.uint8)
    for top in range(0, height, 500):
        rows = np.arange(top, min(top + 500, height), dtype=np.uint32)[:, None]
        band = pixels[top : top + len(rows)]
        noise = generator.integers(0, 16, size=(len(rows), width), dtype=np.uint8)
        band[..., 0] = (rows * 255 // max(1, height - 1)).astype(np.uint8) + noise
        band[..., 1] = columns[None, :] + noise
        band[..., 2] = ((rows + columns[None, :]) // 2 % 256).astype(np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "Bench Camera"
    exif[0x0110] = "BC-12"
    exif[0x0112] = 1
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (51.0, 30.0, 12.5), "W", (0.0, 7.0, 39.0)
    exif.get_ifd(0x8769)[0x927C] = b"maker note"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, exif=exif, xmp=XMP, comment=b"bench")
    return buffer.getvalue()


def short_cine(data: bytes, frames: int = 2) -> bytes:
    """The first frames of an encapsulated multi-frame DICOM (the warm-up)."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    dataset = pydicom.dcmread(io.BytesIO(data))
    kept = list(itertools.islice(generate_frames(dataset.PixelData, number_of_frames=30), frames))
    dataset.PixelData = encapsulate(kept)
    dataset.NumberOfFrames = frames
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _child(*arguments: str) -> str:
    completed = subprocess.run(  # noqa: S603 (this script, with our own arguments)
        [sys.executable, __file__, *arguments], check=True, capture_output=True, text=True
    )
    return completed.stdout


def _current_rss() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def run_case(case: str, input_path: str, repeat: int) -> dict[str, Any]:
    """In the child process: measure one case."""
    sys.path.insert(0, str(ROOT))
    from imaging.pipeline.ingest import Limits, process

    if input_path == CINE:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(CINE)
        if found is None:
            raise SystemExit(f"pydicom's {CINE} is not installed")
        input_path = str(found)
    data = Path(input_path).read_bytes()
    indication = "thyroid" if case == "cine" else "cervical"
    warm_up = short_cine(data) if case == "cine" else synthetic_photo(64, 48)

    def call(payload: bytes) -> Any:
        return process(payload, indication=indication, study_id="C01-0001", uid_key=b"bench-key", limits=Limits())

    call(warm_up)
    del warm_up
    gc.collect()
    rss_before, max_rss_before = _current_rss(), _max_rss()
    result = call(data)
    max_rss_after = _max_rss()
    rss_growth = max(0, max_rss_after - rss_before)
    del result
    gc.collect()
    tracemalloc.start()
    result = call(data)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    bytes_per_sample = 2 if result.bits_stored > 8 and case == "cine" else 1
    decoded = result.rows * result.columns * result.frames * result.samples_per_pixel * bytes_per_sample
    geometry = f"{result.frames} × {result.rows} × {result.columns} × {result.samples_per_pixel}"
    del result
    gc.collect()
    started = time.perf_counter()
    for _ in range(repeat):
        call(data)
    elapsed = time.perf_counter() - started
    return {
        "case": case,
        "input_bytes": len(data),
        "geometry": geometry,
        "images_per_s": round(repeat / elapsed, 2),
        "decoded_bytes": decoded,
        "tracemalloc_peak_bytes": traced_peak,
        "tracemalloc_ratio": round(traced_peak / decoded, 2),
        "ru_maxrss_growth_bytes": rss_growth,
        "ru_maxrss_ratio": round(rss_growth / decoded, 2),
        "ru_maxrss_bytes": max(max_rss_after, max_rss_before, _max_rss()),
        "repeat": repeat,
    }


def main() -> None:
    arguments = parse_arguments()
    if arguments.synthesise:
        Path(arguments.synthesise).write_bytes(synthetic_photo(4000, 3000))
        return
    if arguments.case:
        print(json.dumps(run_case(arguments.case, arguments.input, arguments.repeat)))
        return
    results = []
    with tempfile.TemporaryDirectory() as folder:
        photo_path = Path(folder) / "photo.jpg"
        _child("--synthesise", str(photo_path))
        inputs = {"cine": CINE, "photo": str(photo_path)}
        for case, path in inputs.items():
            output = _child("--case", case, "--input", path, "--repeat", str(arguments.repeat))
            results.append(json.loads(output.strip().splitlines()[-1]))
    megabyte = 1024 * 1024
    for result in results:
        print(f"{CASES[result['case']]}")
        print(f"  input {result['input_bytes'] / megabyte:.1f} MiB, decoded {result['geometry']}")
        print(f"  {result['images_per_s']:.2f} images/s ({result['repeat']} calls)")
        print(f"  decoded image size       {result['decoded_bytes'] / megabyte:8.1f} MiB")
        print(
            f"  tracemalloc peak         {result['tracemalloc_peak_bytes'] / megabyte:8.1f} MiB"
            f"  ratio {result['tracemalloc_ratio']:.2f}"
        )
        print(
            f"  ru_maxrss growth (1 call){result['ru_maxrss_growth_bytes'] / megabyte:8.1f} MiB"
            f"  ratio {result['ru_maxrss_ratio']:.2f}"
        )
        print(f"  ru_maxrss (process)      {result['ru_maxrss_bytes'] / megabyte:8.1f} MiB")
    print(json.dumps({result["case"]: result for result in results}))


if __name__ == "__main__":
    main()
