"""SYNTHETIC training data: computer-generated pictures that look enough like
thyroid ultrasound, colposcopy and a 3D scan to exercise training and
evaluation end to end. They contain no patient data and are not for clinical
use; every folder says so (dataset.json "synthetic": true, a description
starting "SYNTHETIC", README.txt, file names starting "synthetic_").

Lesion sizes are chosen so that a benchmark can report small and large
lesions apart: small lesions are 3–9 px across at every image size (always
under 10 px), large ones 20–50 px across at 128 px and in proportion at other
sizes. About 40 % of lesions are small. Each image's category follows from
its lesions: "normal" (no lesion), "low-grade" (only small lesions) or
"high-grade" (at least one large lesion).

Every image has its own random stream spawned from the seed, so the output is
byte-identical for a seed and image i does not depend on how many are made."""

from ai_engine.synthetic.colposcopy import colposcopy_frame
from ai_engine.synthetic.phantom import write_phantom_3d
from ai_engine.synthetic.shapes import CATEGORIES, CATEGORY_RULE, Frame
from ai_engine.synthetic.thyroid import thyroid_frame
from ai_engine.synthetic.writing import write_colposcopy_2d, write_thyroid_ultrasound_2d

__all__ = [
    "CATEGORIES",
    "CATEGORY_RULE",
    "Frame",
    "colposcopy_frame",
    "thyroid_frame",
    "write_colposcopy_2d",
    "write_phantom_3d",
    "write_thyroid_ultrasound_2d",
]
