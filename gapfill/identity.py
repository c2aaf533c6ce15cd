"""Run names and identities: the run name built from the options, and the hash of what changes a run's result.

A run name has no timestamp, so a requeued job finds its own run again; the identity hashes every option
that changes the result and the data file (its path and a fingerprint of its content). `gapfill.runs`
keeps both in config.json to skip, resume or refuse a run.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path

from gapfill.errors import DataError
from gapfill.files import file_digest

# Options that never change a run's result: left out of its identity.
NOT_IDENTITY = {"checkpoint_dir", "run_name", "overwrite", "device", "local_rank", "log_level", "wandb_mode",
                "wandb_project", "data_path", "num_nodes", "devices", "cache_dir"}


# ------------------------------------------------------------------------------------------ names
def _fmt(v) -> str:
    if isinstance(v, float):
        v = f"{v:g}"
    if isinstance(v, list | tuple):
        v = "-".join(_fmt(x) for x in v)
    ascii_text = unicodedata.normalize("NFKD", str(v)).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9.+-]", "", ascii_text)


def make_run_name(method: str, dataset: str, parts: dict) -> str:
    """`<method>_<dataset>_<key><value>_...`: descriptive, stable, filesystem-safe, no timestamp.
    A dataset name with no ASCII letter or digit (`温度.nc`) becomes `data<hash of the name>`."""
    ds = _fmt(dataset).strip(".") or "data" + hashlib.sha1(dataset.encode()).hexdigest()[:8]
    items = [f"{k}{_fmt(v)}" for k, v in parts.items() if v is not None]
    return "_".join([method, ds] + items)


RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_run_name(name: str) -> str:
    """A --run_name is one plain folder name: letters, digits and `._-`, not starting with '-' or '.'."""
    if not RUN_NAME.fullmatch(name) or len(name) > 200:
        raise DataError(f"--run_name {name!r}: a run name is one folder name of letters, digits and '._-', "
                        "not starting with '-' or '.', at most 200 characters (no '/', no spaces)")
    return name


# ---------------------------------------------------------------------------------------- identity
def data_identity(path) -> dict:
    """The data file as far as a run's identity goes: absolute path, size, modification time and a
    fingerprint of its content (`sha256`); path and content decide (a copy or `touch` is the same data)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime": round(st.st_mtime, 3), "sha256": file_digest(p)}


def identity(args: dict) -> dict:
    """{'hash', 'options', 'data'}: every option that changes the result, and the data file."""
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(args.items()) if k not in NOT_IDENTITY}
    data = data_identity(args["data_path"])
    blob = json.dumps({"options": options, "data": {k: data[k] for k in ("path", "sha256")}}, sort_keys=True, default=str)
    return {"hash": hashlib.sha256(blob.encode()).hexdigest()[:16], "options": options, "data": data}


def identity_diff(old: dict, new: dict) -> list[str]:
    """What differs between two identities, one readable item each."""
    out = []
    oo, no = old.get("options", {}), new["options"]
    for k in sorted(set(oo) | set(no)):
        if k not in oo and no.get(k) in (None, False):
            continue                        # an option added since, at its off/None default: the same run
        if oo.get(k) != no.get(k):
            out.append(f"--{k} {oo.get(k)!r} (now {no.get(k)!r})")
    od, nd = old.get("data", {}), new["data"]
    for k in ("path", "size", "sha256"):
        if k in od and od[k] != nd[k]:     # (a run recorded before fingerprints has no sha256: not compared)
            out.append(f"data file {'content (sha256)' if k == 'sha256' else k} {od[k]!r} (now {nd[k]!r})")
    return out
