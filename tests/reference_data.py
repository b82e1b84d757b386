"""Where the shared reference data for tests (`../shared/reference/` beside
the project) is: CONSILIUM_REFERENCE_DIR when set; else beside this
checkout; else, for a clone (a fresh clone in /tmp, CI's clean clone), beside
the repository it was cloned from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT_VARIABLE = "CONSILIUM_REFERENCE_DIR"


def _origin() -> Path | None:
    try:
        url = subprocess.run(
            ["git", "config", "--get", "remote.origin.url"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not url or "://" in url or url.startswith("git@"):
        return None  # only a clone of a folder on this machine has one
    origin = Path(url)
    return origin if origin.is_absolute() else (ROOT / origin).resolve()


def reference_dir() -> Path:
    """The folder; it may not exist (the caller fails, naming where it looked)."""
    configured = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if configured:
        return Path(configured)
    beside = ROOT.parent / "shared" / "reference"
    if beside.is_dir():
        return beside
    origin = _origin()
    if origin is not None and (origin.parent / "shared" / "reference").is_dir():
        return origin.parent / "shared" / "reference"
    return beside
