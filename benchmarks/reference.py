"""The reference variant: this project as it was before the library change, checked out
from git at `REFERENCE_COMMIT`, so every run compares with it on the same machine."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

REFERENCE_COMMIT = "b5c6f9a"
"""Stop 4's landing: counters only, one hard-coded page, the direct fan-out."""
COUNTER_KEY = "counter-service:counter:{name}"
"""Its key layout (before hash tags)."""
REPO = Path(__file__).resolve().parent.parent


def checkout(dest: Path) -> Path:
    """Extract the reference's `counter_service` and `ui` into `dest` (once); return it.

    Run it with `PYTHONPATH=dest`: that directory comes before the installed project."""
    marker = dest / ".complete"
    if marker.exists():
        return dest
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", REFERENCE_COMMIT, "counter_service", "ui"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    marker.touch()
    return dest
