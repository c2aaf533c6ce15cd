"""What the benchmark scripts share: writing their records."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger("benchmarks")


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows (dicts with the same keys) as a CSV at `path` (its folder made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    log.info("wrote %s", path)
    return path
