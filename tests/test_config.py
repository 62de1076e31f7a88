"""Config errors are clear and name the field; YAML and command line combine as documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from superhf.config import ConfigError, SuperHFConfig, parse_train_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"num_generations": 0}, "num_generations"),
        ({"num_generations": 4, "num_kept_per_prompt": 5}, "num_kept_per_prompt"),
        ({"beta": -0.1}, "beta"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1e-5}, "learning_rate"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": 0}, "temperature"),
        ({"num_generations": "8"}, "num_generations"),
        ({"use_peft": "yes"}, "use_peft"),
        ({"reward_funcs": []}, "reward_funcs"),
        ({"reward_funcs": ["a", "b"], "reward_weights": [1.0]}, "reward_weights"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"report_to": ["nope"]}, "report_to"),
        ({"dtype": "float64"}, "dtype"),
    ],
)
def test_impossible_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        SuperHFConfig(**values)


def test_yaml_then_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("num_generations: 4\nlearning_rate: 1e-4\nbeta: 0.1\n")
    config = parse_train_args(["--config", str(path), "--num_generations", "8", "--no_use_peft"])
    assert config.num_generations == 8  # the command line wins
    assert config.learning_rate == 1e-4  # YAML's "1e-4" string read as the number
    assert config.beta == 0.1 and config.use_peft is False
    config = parse_train_args(["--num-generations", "3", "--reward_funcs", "default", "x:y"])
    assert config.num_generations == 3 and config.reward_funcs == ["default", "x:y"]


def test_unknown_keys_suggest_the_right_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("num_generation: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'num_generations'"):
        parse_train_args(["--config", str(path)])
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        parse_train_args(["--learning_rat", "1e-3"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        parse_train_args(["--config", str(path)])
    path.write_text("beta: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_train_args(["--config", str(path)])
    path.write_text("beta: high\n")
    with pytest.raises(ConfigError, match="beta must be float"):
        parse_train_args(["--config", str(path)])


def test_command_line_type_errors_exit_with_argparse_message(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_train_args(["--num_generations", "many"])
    assert exc.value.code == 2
    assert "--num_generations" in capsys.readouterr().err


def test_quickstart_yaml_spells_out_the_defaults():
    values = yaml.safe_load((CONFIGS / "quickstart.yaml").read_text())
    defaults = dataclasses.asdict(SuperHFConfig())
    assert {k: defaults[k] for k in values} == values
    assert set(values) == set(defaults)


def test_paper_yaml_has_the_paper_settings():
    config = SuperHFConfig.from_yaml(CONFIGS / "paper.yaml")
    assert (config.num_generations, config.num_kept_per_prompt, config.beta) == (16, 1, 0.35)
    assert (config.learning_rate, config.lora_r, config.lora_alpha) == (2e-5, 4, 32)
    assert (config.temperature, config.top_p, config.max_completion_length) == (1.0, 0.95, 64)
    assert (config.prompts_per_iteration, config.per_device_train_batch_size) == (2, 2)
    assert config.seed == 66 and config.warmup_steps == 32 and config.bf16


def test_paper_yaml_runs_the_papers_5000_iterations():
    """10,000 prompts at 2 per iteration, not one pass over all of Anthropic/hh-rlhf."""
    text = (CONFIGS / "paper.yaml").read_text()
    config = SuperHFConfig.from_yaml(CONFIGS / "paper.yaml")
    assert config.max_iterations == 5000
    assert config.max_iterations * config.prompts_per_iteration == 10_000
    assert "10,000 prompts / 2 per iteration = 5,000 iterations" in text
    assert "SUPERHF.md" not in text  # cite the repo's docs, not a file outside it


def test_reward_model_flag_is_short_for_reward_funcs():
    from superhf.config import parse_train_args

    assert parse_train_args(["--reward_model", "runs/rm"]).reward_funcs == ["runs/rm"]


def test_eval_renders_prompts_as_the_training_run_did():
    from superhf.config import EvalConfig

    assert EvalConfig().apply_chat_template is None  # unset: each run folder's own setting
    train = SuperHFConfig(apply_chat_template=True)
    assert EvalConfig.from_train_config(train).apply_chat_template is True


def test_ablation_configs_are_the_issue_17_setting_plus_their_option():
    """configs/ablations/: default.yaml, and one file per option that differs from it only in
    that option's fields (the comparison harness runs them as they are)."""
    folder = CONFIGS / "ablations"
    base = yaml.safe_load((folder / "default.yaml").read_text())
    assert SuperHFConfig(**base).sample_weighting == "none"  # the paper's method
    options = {
        "top_k": {"num_kept_per_prompt"},
        "epochs": {"num_train_epochs"},
        "advantage": {"sample_weighting", "num_kept_per_prompt"},
        "rank": {"sample_weighting", "num_kept_per_prompt"},
        "negatives": {"negative_weight"},
        "skip_uniform": {"skip_uniform_prompts"},
        "combo": {
            "sample_weighting",
            "num_kept_per_prompt",
            "negative_weight",
            "skip_uniform_prompts",
            "num_train_epochs",
        },
    }
    for name, fields in options.items():
        values = yaml.safe_load((folder / f"{name}.yaml").read_text())
        SuperHFConfig.from_yaml(folder / f"{name}.yaml")  # valid
        changed = {k for k in values.keys() | base.keys() if values.get(k) != base.get(k)}
        assert changed == fields, name
