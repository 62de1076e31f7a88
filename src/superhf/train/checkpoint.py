"""Checkpoints that survive a kill at any moment, and finding the latest good one to resume from.

A checkpoint is written into a temporary folder, every file is flushed to disk, a manifest of
sizes and SHA-256 sums is written last, and only then is the folder renamed to
`checkpoints/checkpoint-<iteration>`. A rename is atomic, so a folder with that name is either
complete or (after disk corruption) fails its manifest check; resume then falls back to the
previous checkpoint and says so.

`TrainingState` saves and restores what a trainer's checkpoint holds: the trainable weights
(whole tensors, gathered under FSDP), the optimizer and scheduler, every process's random
state and the trainer's counters (trainer_state.json).
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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from superhf.errors import CheckpointError, ConfigError
from superhf.files import COMPLETIONS_FILE, EVAL_COMPLETIONS_FILE
from superhf.sampling_model import full_tensor

if TYPE_CHECKING:
    from superhf.train.update import PolicyUpdate

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


class TrainingState:
    """A run's state in its checkpoints: the trainable weights, the optimizer, the scheduler,
    the batch sizes in use, every process's random state, and the trainer's counters.

    `update` holds the policy and optimizer as accelerate prepared them. Under FSDP the weights
    and the optimizer state are saved whole (gathered: a collective) and sharded on loading.
    `prompt_order` and `num_iterations` are the run's: a resumed run must have the same order.
    """

    def __init__(
        self,
        update: PolicyUpdate,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        prompt_order: list[int],
        num_iterations: int,
    ):
        self.accelerator, self.processes = update.accelerator, update.processes
        self.model, self.optimizer, self.scheduler = update.model, update.optimizer, scheduler
        self.uses_adapter, self.backoff = update.uses_adapter, update.backoff
        self.args = update.args
        self.prompt_order, self.num_iterations = prompt_order, num_iterations

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The policy's trainable parameters by name (the adapter's under LoRA)."""
        model = self.accelerator.unwrap_model(self.model)
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def whole_trainable_weights(self) -> dict[str, torch.Tensor]:
        """The trainable weights on the CPU, whole (under FSDP: gathered, a collective)."""
        return {
            n: full_tensor(p.detach()).cpu().contiguous()
            for n, p in self.trainable_parameters().items()
        }

    def whole_model_weights(self) -> dict[str, torch.Tensor] | None:
        """What `save_pretrained` should write under FSDP (a collective): the adapter's weights,
        or the whole model gathered to the main process; None without FSDP (its own)."""
        if not self.processes.sharded:
            return None
        if self.uses_adapter:
            return self.whole_trainable_weights()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state_dict = get_model_state_dict(self.model, options=options)
        # A tied weight is gathered once per name: keep the one name save_pretrained keeps.
        model = self.accelerator.unwrap_model(self.model)
        names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
        return {n: t for n, t in state_dict.items() if n in names}

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state to save: its own state_dict, or under FSDP the whole state
        keyed by parameter name (gathered to the main process: a collective)."""
        if not self.processes.sharded:
            return self.optimizer.state_dict()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def save(
        self,
        iteration: int,
        history: list[dict[str, Any]],
        log_sizes: dict[str, int],
        num_skipped_total: int,
    ) -> Path | None:
        """Checkpoint `iteration` into output_dir, keeping `save_total_limit`, with the metrics
        so far (`history`), where each completions file ends (`RunLogger.sizes`) and the
        skipped minibatches; its folder, or None on processes other than the main one, which
        alone writes. A collective: every process calls it (for the random states, and under
        FSDP the whole weights and optimizer state). A failed save raises CheckpointError and
        leaves older checkpoints intact."""
        rng_states = self.processes.all_ranks(rng_state())
        # Collectives under FSDP (the whole weights and optimizer state), so on every process.
        tensors = self.whole_trainable_weights()
        optimizer_state = self.optimizer_state()
        if not self.accelerator.is_main_process:
            self.processes.barrier("waiting for the checkpoint")
            return None
        state = {  # trainer_state.json
            "iteration": iteration,
            "num_iterations": self.num_iterations,
            "prompt_order": self.prompt_order,
            "history": history,
            "completions_bytes": log_sizes[COMPLETIONS_FILE],
            "eval_completions_bytes": log_sizes[EVAL_COMPLETIONS_FILE],
            "num_skipped_total": num_skipped_total,
            "generation_batch_size": self.backoff.generation_batch_size,
            "train_micro_batch_size": self.backoff.train_micro_batch_size,
            "num_processes": self.processes.size,
            "sharded": self.processes.sharded,
        }

        def write(folder: Path) -> None:
            save_file(tensors, folder / "trainable.safetensors")
            if self.uses_adapter:  # small, and loadable by `superhf eval` and peft
                model = self.accelerator.unwrap_model(self.model)
                whole = tensors if self.processes.sharded else None  # not its own shards
                model.save_pretrained(folder, state_dict=whole)
            torch.save(optimizer_state, folder / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
            for rank, rng in enumerate(rng_states):  # JSON + safetensors: loading runs no code
                write_rng_state(folder, rng, rank)
            (folder / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")

        try:
            return save_checkpoint(
                self.args.output_dir, iteration, write, self.args.save_total_limit
            )
        finally:
            self.processes.barrier("waiting for the checkpoint")

    def resume(
        self,
        resume_from_checkpoint: str | Path | bool | None,
        warn: Callable[[str], None],
    ) -> tuple[Path, dict[str, Any]] | None:
        """(checkpoint, its trainer_state.json) after loading the newest valid checkpoint that
        `resume_from_checkpoint` names (a run folder, a checkpoint folder, True for output_dir;
        None: `resume_from_checkpoint` of the settings), or None for a new run. `warn` hears
        of damaged checkpoints skipped."""
        resume = self.args.resume_from_checkpoint
        if resume_from_checkpoint is not None:
            resume = (
                self.args.output_dir if resume_from_checkpoint is True else resume_from_checkpoint
            )
        if not resume:
            return None
        checkpoint = find_resume_checkpoint(resume, warn=warn)
        return checkpoint, self.load(checkpoint)

    def load(self, folder: Path) -> dict[str, Any]:
        """Restore the weights, optimizer, scheduler, batch sizes in use and this process's
        random state from `folder`; its trainer_state.json (the counters `save` was given).
        Raises ConfigError for a checkpoint of another process layout, CheckpointError for one
        of another model or other prompts."""
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        if state.get("sharded", False) != self.processes.sharded:
            engines = {False: "without FSDP", True: "with FSDP"}
            raise ConfigError(
                f"{folder} was written by a run {engines[state.get('sharded', False)]}; this "
                f"run is {engines[self.processes.sharded]}. Resume with the accelerate config "
                "that started the run."
            )
        tensors = load_file(folder / "trainable.safetensors")
        params = self.trainable_parameters()
        if set(tensors) != set(params):
            raise CheckpointError(
                f"{folder} holds other trainable weights than this model: model_name_or_path, "
                "use_peft and the lora_* settings must match the run being resumed."
            )
        with torch.no_grad():
            for name, param in params.items():
                value = tensors[name].to(param.device)
                if isinstance(param, DTensor):  # this process's shard of the whole tensor
                    value = distribute_tensor(value, param.device_mesh, param.placements)
                param.copy_(value)
        optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True)
        if self.processes.sharded:
            options = StateDictOptions(full_state_dict=True)
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_state, options=options)
        else:
            self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        set_rng_state(read_rng_state(folder, self.processes.rank))
        written_by = state.get("num_processes", 1)
        if written_by != self.processes.size:
            raise ConfigError(
                f"{folder} was written by {written_by} processes; this run has "
                f"{self.processes.size}. Resume on {written_by} processes (e.g. accelerate "
                f"launch --num_processes {written_by} or torchrun --nproc_per_node "
                f"{written_by}): each process's random state and the batch sizes in use "
                "belong to that layout."
            )
        if state["prompt_order"] != self.prompt_order:
            raise CheckpointError(
                f"{folder} was written for other prompts: dataset_name, "
                "max_prompt_length and seed must match the run being resumed."
            )
        self.backoff.generation_batch_size = state["generation_batch_size"]
        self.backoff.train_micro_batch_size = state["train_micro_batch_size"]
        return state


def resumed_log_sizes(state: dict[str, Any]) -> dict[str, int]:
    """{completions file: its size when the checkpoint was saved} from its trainer_state.json;
    a checkpoint from before eval_completions.jsonl was logged lacks that file's size."""
    sizes = {COMPLETIONS_FILE: state["completions_bytes"]}
    if "eval_completions_bytes" in state:
        sizes[EVAL_COMPLETIONS_FILE] = state["eval_completions_bytes"]
    return sizes
