"""Checkpoint files: atomic writes, manifests that catch damage, fallback, pruning, full disks."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from superhf.train.checkpoint import (
    CheckpointError,
    check_checkpoint,
    find_resume_checkpoint,
    list_checkpoints,
    read_rng_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_rng_state,
)


def _writer(text: str):
    def write(folder):
        (folder / "weights.bin").write_bytes(text.encode() * 100)
        (folder / "state.json").write_text('{"x": 1}')

    return write


def test_save_is_sealed_and_listed_in_order(tmp_path):
    for iteration in (10, 2, 5):
        save_checkpoint(tmp_path, iteration, _writer(str(iteration)))
    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["checkpoint-2", "checkpoint-5", "checkpoint-10"]
    assert all(check_checkpoint(p) is None for p in found)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_save_total_limit_keeps_the_newest(tmp_path):
    for iteration in range(1, 6):
        save_checkpoint(tmp_path, iteration, _writer("w"), save_total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-5"]


def test_pruning_after_a_fallback_resume_keeps_the_new_save(tmp_path):
    """checkpoint-10 is corrupt, the run resumed from 5 and saved 7: 7 must survive limit 1."""
    save_checkpoint(tmp_path, 5, _writer("a"), save_total_limit=2)
    corrupt = save_checkpoint(tmp_path, 10, _writer("b"), save_total_limit=2)
    (corrupt / "weights.bin").write_bytes(b"X" * 100)
    new = save_checkpoint(tmp_path, 7, _writer("c"), save_total_limit=1)
    assert new.is_dir() and check_checkpoint(new) is None
    assert find_resume_checkpoint(tmp_path, warn=lambda _: None) == new
    assert not (tmp_path / "checkpoints" / "checkpoint-5").exists()


def test_pruning_never_deletes_the_newest_valid_or_the_one_just_written(tmp_path):
    save_checkpoint(tmp_path, 5, _writer("a"))
    newer = save_checkpoint(tmp_path, 10, _writer("b"))
    new = save_checkpoint(tmp_path, 7, _writer("c"), save_total_limit=1)
    assert list_checkpoints(tmp_path) == [new, newer]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: (p / "weights.bin").write_bytes(b"short"), "has 5 bytes"),
        (lambda p: (p / "weights.bin").write_bytes(b"X" * 100), "checksum"),
        (lambda p: (p / "state.json").unlink(), "state.json is missing"),
        (lambda p: (p / "manifest.json").unlink(), "no manifest"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable"),
    ],
)
def test_damaged_latest_falls_back_to_the_previous(tmp_path, damage, problem):
    save_checkpoint(tmp_path, 1, _writer("a"))
    latest = save_checkpoint(tmp_path, 2, _writer("b"))
    damage(latest)
    assert problem in check_checkpoint(latest)
    warnings: list[str] = []
    chosen = find_resume_checkpoint(tmp_path, warn=warnings.append)
    assert chosen.name == "checkpoint-1"
    assert len(warnings) == 1 and "checkpoint-2" in warnings[0] and problem in warnings[0]


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        find_resume_checkpoint(tmp_path)
    latest = save_checkpoint(tmp_path, 1, _writer("a"))
    (latest / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        find_resume_checkpoint(tmp_path, warn=lambda _: None)


def test_a_half_written_temporary_folder_is_ignored(tmp_path):
    save_checkpoint(tmp_path, 1, _writer("a"))
    half = tmp_path / "checkpoints" / ".tmp-checkpoint-2-999"
    half.mkdir()
    (half / "weights.bin").write_bytes(b"partial")
    assert find_resume_checkpoint(tmp_path).name == "checkpoint-1"


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path):
    previous = save_checkpoint(tmp_path, 1, _writer("a"))

    def write_until_full(folder):
        (folder / "weights.bin").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, 2, write_until_full)
    assert "No space left on device" in str(info.value)
    assert "checkpoint-1 is intact" in str(info.value)
    assert list_checkpoints(tmp_path) == [previous]
    assert check_checkpoint(previous) is None
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_random_states_round_trip_through_files_that_run_no_code(tmp_path):
    write_rng_state(tmp_path)
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rng_state.json",
        "rng_state.safetensors",
    ]
    set_rng_state(read_rng_state(tmp_path))
    again = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])


def test_a_legacy_rng_pt_still_loads_without_running_code(tmp_path):
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(read_rng_state(tmp_path))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_every_checkpoint_file_loads_with_weights_only(tmp_path, tiny_model_dir):
    """A checkpoint someone sent you must not be able to run code when it is resumed."""
    import json

    from safetensors.torch import load_file

    from superhf.config import SuperHFConfig
    from superhf.train.trainer import SuperHFTrainer

    config = SuperHFConfig(
        model_name_or_path=str(tiny_model_dir),
        num_generations=2,
        max_completion_length=4,
        prompts_per_iteration=2,
        max_iterations=1,
        top_k=20,
        num_eval_prompts=0,
        output_dir=str(tmp_path / "run"),
    )
    rows = [{"prompt": f"Question {i}?"} for i in range(4)]
    trainer = SuperHFTrainer(
        reward_funcs=lambda p, c, **kw: [0.0] * len(c), args=config, train_dataset=rows
    )
    trainer.train()
    (checkpoint,) = list_checkpoints(tmp_path / "run")
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
    assert {"rng_state.json", "rng_state.safetensors", "optimizer.pt"} <= {p.name for p in files}
    for path in files:
        if path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".md":  # peft's model card
            path.read_text()
        else:
            torch.load(path, weights_only=True)
