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
    rng_state,
    save_checkpoint,
    set_rng_state,
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


def test_random_states_round_trip(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=False))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
