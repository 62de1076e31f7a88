"""Checkpoints of a TRL baseline run (GRPO, RLOO), so that a stopped run resumes where it was.

A long comparison is stopped and started again (a session ends, the machine is wanted): a run
that started over each time might never finish. Every `CHECKPOINT_EVERY_S` seconds, at the end
of an update, the trainer saves its own checkpoint (`checkpoint-N` in the run folder: the
adapter, the optimizer, the schedule, the random states, the step) and this module adds what
superhf keeps beside it (`STATE_FILE`): the sampled-token count, the generation rounds, the
progress lines so far and the reward-hacking monitor's state. A checkpoint counts only once
that file is in it (it is written last); the older ones are then removed, and all of them once
the run is done.

Resumed, the run goes on from the update after the checkpoint with the random states the
trainer saved there, so it samples and trains as the run that never stopped would
(tests/compare/test_baseline_checkpoint.py compares the two). Its wall time counts the
training it kept, not the work lost to the stop.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from superhf.files import write_text_atomic

CHECKPOINT_EVERY_S = 300.0
"""Seconds of training between checkpoints (a checkpoint of a LoRA run takes about a second)."""
STATE_FILE = "superhf_state.json"
"""superhf's part of a checkpoint; its presence marks the checkpoint complete."""
PREFIX = "checkpoint-"


def checkpoint_step(checkpoint: Path) -> int:
    """The update a checkpoint was taken after (`checkpoint-N`: N)."""
    return int(checkpoint.name[len(PREFIX) :])


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """The run folder's complete checkpoints, oldest first (by update)."""
    found = [
        path
        for path in Path(folder).glob(f"{PREFIX}*")
        if path.name[len(PREFIX) :].isdigit() and (path / STATE_FILE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None (the run starts afresh)."""
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def remove_checkpoints(folder: str | Path, keep: Path | None = None) -> None:
    """Every checkpoint folder of the run (complete or not) but `keep`."""
    for path in Path(folder).glob(f"{PREFIX}*"):
        if path.is_dir() and path != keep:
            shutil.rmtree(path, ignore_errors=True)


def checkpoint_callback(state: Callable[[], dict[str, Any]], every_s: float | None = None) -> Any:
    """A TrainerCallback that asks the trainer for a checkpoint at the end of an update once
    `every_s` seconds (default `CHECKPOINT_EVERY_S`) have passed since the last, unless the run
    is stopping anyway; it then writes `state()` into it and removes the older checkpoints.
    Add it after the callbacks that may stop the run."""
    from transformers import TrainerCallback

    class SaveEvery(TrainerCallback):
        last = time.monotonic()

        def on_step_end(self, args: Any, trainer_state: Any, control: Any, **_: Any) -> Any:
            seconds = CHECKPOINT_EVERY_S if every_s is None else every_s
            due = time.monotonic() - self.last >= seconds
            if due and not control.should_training_stop:
                control.should_save = True
            return control

        def on_save(self, args: Any, trainer_state: Any, control: Any, **_: Any) -> Any:
            folder = Path(args.output_dir) / f"{PREFIX}{trainer_state.global_step}"
            write_text_atomic(folder / STATE_FILE, json.dumps(state(), indent=1) + "\n")
            remove_checkpoints(args.output_dir, keep=folder)
            self.last = time.monotonic()
            return control

    return SaveEvery()
