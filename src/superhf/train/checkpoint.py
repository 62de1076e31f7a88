"""Checkpoints that survive a kill at any moment, and finding the latest good one to resume from.

A checkpoint is written into a temporary folder, every file is flushed to disk, a manifest of
sizes and SHA-256 sums is written last, and only then is the folder renamed to
`checkpoints/checkpoint-<iteration>`. A rename is atomic, so a folder with that name is either
complete or (after disk corruption) fails its manifest check; resume then falls back to the
previous checkpoint and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from superhf.errors import CheckpointError

CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "manifest.json"
RNG_JSON, RNG_TENSORS = "rng_state.json", "rng_state.safetensors"
LEGACY_RNG = "rng.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from: Python, NumPy, torch CPU and CUDA."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_files(rank: int) -> tuple[str, str]:
    """Process `rank`'s random-state files (process 0's keep the one-process names)."""
    if rank == 0:
        return RNG_JSON, RNG_TENSORS
    return f"rng_state_rank{rank}.json", f"rng_state_rank{rank}.safetensors"


def write_rng_state(folder: Path, state: dict[str, Any] | None = None, rank: int = 0) -> None:
    """The random states as JSON (Python, NumPy) and safetensors (torch CPU and CUDA bytes).

    Neither format can run code when read, unlike a pickled rng.pt. `state`: this process's
    `rng_state()` by default; `rank`: whose state it is (a run on many processes writes one
    pair of files per process).
    """
    state = state if state is not None else rng_state()
    json_name, tensors_name = _rng_files(rank)
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    plain = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": name,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    (folder / json_name).write_text(json.dumps(plain), encoding="utf-8")
    tensors = {"torch": state["torch"]}
    tensors |= {f"cuda.{i}": t for i, t in enumerate(state.get("cuda", []))}
    save_file({k: t.contiguous() for k, t in tensors.items()}, folder / tensors_name)


def read_rng_state(folder: Path, rank: int = 0) -> dict[str, Any]:
    """What `write_rng_state` wrote (process `rank`'s), for `set_rng_state`. A checkpoint from
    before it (rng.pt) is read with `weights_only=True`, allowing only NumPy's array types."""
    if not (folder / RNG_JSON).is_file() and (folder / LEGACY_RNG).is_file():
        core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
        arrays = [np.ndarray, np.dtype, np.dtypes.UInt32DType, core.multiarray._reconstruct]
        with torch.serialization.safe_globals(arrays):
            return torch.load(folder / LEGACY_RNG, weights_only=True)
    json_name, tensors_name = _rng_files(rank)
    plain = json.loads((folder / json_name).read_text(encoding="utf-8"))
    tensors = load_file(folder / tensors_name)
    py, npy = plain["python"], plain["numpy"]
    state: dict[str, Any] = {
        "python": (py["version"], tuple(py["state"]), py["gauss"]),
        "numpy": (
            npy["bit_generator"],
            np.array(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        ),
        "torch": tensors["torch"],
    }
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))
    if cuda:
        state["cuda"] = [tensors[k] for k in cuda]
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_iteration(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (temporary folders are not listed)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=checkpoint_iteration)


def save_checkpoint(
    run_dir: str | Path,
    iteration: int,
    write: Callable[[Path], None],
    save_total_limit: int | None = None,
) -> Path:
    """Call `write(folder)` into a temporary folder, seal it with a manifest, rename it into place.

    On any OSError (a full disk, say) the temporary folder is removed, earlier checkpoints are
    untouched, and a CheckpointError says what happened.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / f"checkpoint-{iteration}"
    tmp = root / f".tmp-checkpoint-{iteration}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "iteration": iteration,
            "files": {
                str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                for p in files
            },
        }
        for p in files:
            _fsync(p)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _fsync(tmp / MANIFEST)
        if final.exists():  # the same iteration saved again (e.g. a signal right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = [p for p in list_checkpoints(run_dir) if p != final]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "none earlier"
        raise CheckpointError(
            f"could not write checkpoint {final} ({err.strerror or err}); {kept}."
        ) from err
    if save_total_limit:
        prune_checkpoints(run_dir, final, save_total_limit)
    return final


def prune_checkpoints(run_dir: str | Path, just_written: Path, save_total_limit: int) -> None:
    """Delete all but the newest `save_total_limit` checkpoints, never `just_written` nor the
    newest valid one.

    After a resume that fell back past a damaged checkpoint, that damaged one is the newest by
    number; counting it alone would delete the good save just made. Only checkpoints newer than
    `just_written` are verified (the normal case hashes nothing).
    """
    found = list_checkpoints(run_dir)
    keep = set(found[-save_total_limit:]) | {just_written}
    for candidate in reversed(found):
        if candidate == just_written or check_checkpoint(candidate) is None:
            keep.add(candidate)  # the newest valid checkpoint
            break
    for old in found:
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)


def check_checkpoint(path: Path) -> str | None:
    """None if the checkpoint is complete and unaltered, else what is wrong with it."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (it was never finished)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, UnicodeDecodeError):
        return "its manifest is unreadable"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, expected {expected['bytes']}"
        if _sha256(file) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def find_resume_checkpoint(path: str | Path, warn: Callable[[str], None] = print) -> Path:
    """The newest valid checkpoint of a run folder (or `path` itself if it is a checkpoint).

    Invalid newer checkpoints are reported through `warn` and skipped.
    """
    path = Path(path)
    if _NAME.match(path.name) and path.is_dir():
        candidates = [path]
    else:
        candidates = list_checkpoints(path)
        if not candidates:
            raise CheckpointError(
                f"resume_from_checkpoint: no checkpoints in {path / CHECKPOINTS_DIR}; "
                "checkpoints are written every save_steps iterations."
            )
    for candidate in reversed(candidates):
        problem = check_checkpoint(candidate)
        if problem is None:
            return candidate
        warn(f"Checkpoint {candidate} is not usable: {problem}. Trying the one before it.")
    raise CheckpointError(f"resume_from_checkpoint: no valid checkpoint in {path}.")
