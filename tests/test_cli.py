"""The command line: help that teaches, errors before any model loads."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _superhf(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "superhf.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_help_lists_grouped_settings():
    result = _superhf("train", "--help")
    assert result.returncode == 0
    for text in ("generation:", "--num_generations", "--beta", "KL coefficient", "--config"):
        assert text in result.stdout


def test_top_level_help_lists_train():
    result = _superhf("--help")
    assert result.returncode == 0 and "train" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num_generations", "4", "--num_kept_per_prompt", "5"], "num_kept_per_prompt"),
        (["--beta", "-1"], "beta must be >= 0"),
        (["--learning_rat", "1"], "did you mean 'learning_rate'"),
        (["--dataset_name", "missing.jsonl"], "no such file 'missing.jsonl'"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args, message, tmp_path):
    result = _superhf("train", "--output_dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr


def test_missing_model_folder_is_named(tmp_path):
    result = _superhf("train", "--model_name_or_path", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "model_name_or_path: no such folder" in result.stderr
    assert "Traceback" not in result.stderr
