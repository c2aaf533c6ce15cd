"""Atomic file writes that honour the user's umask, and JSON (a leaf module: it imports nothing of ours).

`tempfile.mkstemp` creates files readable by their owner only (0600); a checkpoint renamed from such a
file would be unreadable to a project group on a shared cluster, so every file is given the mode a plain
`open()` would have given it (0666 minus the umask) before it is renamed into place.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from gapfill.errors import DataError


def current_umask() -> int:
    """The process umask (read from /proc on Linux, without changing it; os.umask elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path next to `final`; rename it onto `final` only if the block succeeds.
    The file gets the mode of a file made with `open()` (0666 minus the umask)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_digest(path) -> str:
    """sha256 of a file's content (first 16 hex digits): the data fingerprint of a run's identity. Read once
    per process while the file's inode, size and change time stay the same (a test job over many runs); the
    change time, unlike the modification time, cannot be set back by a rewrite."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_ino, st.st_size, st.st_ctime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, inode: int, size: int, ctime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:16]


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, obj) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))


def write_csv(path, rows: list[dict]) -> Path:
    """Atomically write `rows` (dicts with the keys of the first) as a CSV with a header; returns the path."""
    import csv
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def read_json(path, what: str = "file") -> dict:
    """A JSON object from `path`; a missing, unreadable or invalid file is a DataError naming it."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a valid JSON {what} ({err}); restore it or run again with --overwrite") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a valid JSON {what} (a {type(obj).__name__}, not an object)")
    return obj


def check_output_file(path, example: str, option: str = "--out") -> None:
    """Refuse an output file path that is a folder (suggesting `example` inside it) or whose folder could
    not be written; creates nothing."""
    if Path(path).is_dir():
        raise DataError(f"{option} {path} is a directory; give a file path such as {Path(path) / example}")
    check_writable(Path(path).parent, option)


def check_writable(folder, option: str = "output folder") -> Path:
    """Refuse, before any long work, an output `folder` that could not be created or written (a file in
    its way, a read-only or foreign parent). Creates nothing."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"{option} {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"{option} {folder}: {probe} is not writable by this user; choose another folder")
    return folder


def check_figure_path(path, option: str = "--out", allowed: tuple[str, ...] | None = None) -> Path:
    """Refuse, before any work, a figure path matplotlib cannot write (`x.xyz`, no suffix) or whose folder
    could not be written; `allowed` narrows the formats (e.g. ("pdf",) for a multi-page report)."""
    from matplotlib.backend_bases import FigureCanvasBase
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    formats = allowed or tuple(sorted(FigureCanvasBase.get_supported_filetypes()))
    if path.is_dir():
        raise DataError(f"{option} {path} is a folder; give a file name")
    if ext not in formats:
        raise DataError(f"{option} {path}: not a figure format that can be written (use .{' .'.join(formats)})")
    check_writable(path.parent, option)
    return path
