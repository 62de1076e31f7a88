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


HEAVY_MODULES = ("torch", "transformers", "datasets", "peft", "accelerate", "matplotlib")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["train", "--beta", "-1"],
        ["eval", "--help"],
        ["eval", "some/model", "--num_prompts", "0"],
        ["report", "--help"],
        ["report"],
        ["calibrate", "--help"],
        ["calibrate", "some/model", "--limit", "0"],
        ["judge", "--help"],
        ["judge", "a.jsonl", "b.jsonl"],
        ["reward", "train", "--help"],
        ["reward", "train", "--learning_rate", "-1"],
        ["compare", "--help"],
        ["compare", "--methods", "superhf", "nope"],
    ],
)
def test_help_and_refused_settings_load_no_heavy_library(args):
    """--help and a refused setting answer at once: torch & co. load only with the work."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "superhf", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 2), result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert imported, "no -X importtime output"
    assert not imported & set(HEAVY_MODULES)
    if result.returncode == 2:
        assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_every_superhf_error_is_one_line_and_its_exit_code(monkeypatch, tmp_path):
    """One error boundary: any SuperHFError of any command exits with the error's code."""
    from typer.testing import CliRunner

    from superhf.cli import app
    from superhf.errors import CheckpointError, JudgeError
    from superhf.evaluation import report

    def fail(*args, **kwargs):
        raise CheckpointError("disk [full]")

    monkeypatch.setattr(report, "build_report", fail)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == CheckpointError.exit_code == 1
    assert (
        "error: disk [full]" in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )

    def fail_judge(*args, **kwargs):
        raise JudgeError("endpoint down")

    from superhf.evaluation import judge

    monkeypatch.setattr(judge, "run_judge", fail_judge)
    result = CliRunner().invoke(app, ["judge", "a.jsonl", "--judge_model", "m"])
    assert result.exit_code == 2 and "error: endpoint down" in result.output


def test_top_level_help_lists_every_command_in_one_line():
    result = _superhf("--help")
    box = result.stdout.split("Commands")[1].splitlines()[1:-1]
    names = [row.strip("│ ").split(" ")[0] for row in box if row.startswith("│")]
    assert names == [
        "train",
        "eval",
        "report",
        "calibrate",
        "judge",
        "monitor",
        "compare",
        "reward",
    ]


@pytest.mark.parametrize("command", ["report", "calibrate", "judge", "compare"])
def test_every_command_has_the_grouped_settings_help(command):
    result = _superhf(command, "--help")
    assert result.returncode == 0
    assert f"usage: superhf {command}" in result.stdout and "--output_dir" in result.stdout
    assert "--config" in result.stdout and "output:" in result.stdout


def test_eval_table_prints_whole_numbers_off_a_terminal(capsys):
    """Piped or redirected output (rich's 80 columns) used to cut figures to "-0.1…"."""
    from superhf.console import make_console
    from superhf.evaluation.evaluate import results_table

    metrics = {
        "reward": {"mean": -0.123456, "se": 0.045678},
        "test_reward": {"mean": 0.654321, "se": 0.012345},
        "kl": {"per_sequence": {"mean": 12.3456, "se": 0.5}, "per_token": {"mean": 0.1234}},
        "kl_exact": {"per_token": {"mean": 0.0567, "se": 0.0012}},
        "meteor": {"mean": 0.2, "ci_low": 0.18, "ci_high": 0.22},
        "length": {"mean_tokens": 40.0, "clipped_fraction": 0.125},
        "distinct_1": 0.5,
        "distinct_2": 0.875,
    }
    result = {"models": {"runs/a-rather-long-run-folder-name/beta-0.35": metrics}}
    make_console().print(results_table(result))
    printed = capsys.readouterr().err
    for figure in ("-0.123 ± 0.046", "+0.654 ± 0.012", "0.0567 ± 0.0012", "0.1234", "0.200 [0.180"):
        assert figure in printed
    assert "…" not in printed


def test_lora_wrapping_prints_no_library_warning(tokenizer):
    """peft's `is_gradient_checkpointing` FutureWarning is for peft, not for our users."""
    import warnings

    from superhf.config import SuperHFConfig
    from superhf.models import prepare_policy
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama(len(tokenizer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = prepare_policy(model, SuperHFConfig(output_dir="unused"))
    assert hasattr(policy, "disable_adapter")  # wrapped
    assert [str(w.message) for w in caught] == []


def test_loading_a_lora_run_prints_no_library_warning(tiny_model_dir, tmp_path):
    import warnings

    from superhf.config import SuperHFConfig
    from superhf.models import load_model, load_policy, prepare_policy

    policy = prepare_policy(load_model(str(tiny_model_dir)), SuperHFConfig(output_dir="unused"))
    policy.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, *_ = load_policy(str(tmp_path), "float32", reference_model=str(tmp_path))
    assert hasattr(model, "disable_adapter")
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []
