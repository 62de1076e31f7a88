"""The matched-updates check: what shapes each method's update, read from the settings each
run plans (and writes), and the refusal of a comparison where it differs."""

from __future__ import annotations

import pytest

from superhf.compare import update_settings
from superhf.compare.config import CompareConfig
from superhf.compare.harness import check_updates, expand_runs
from superhf.compare.methods import planned_settings
from superhf.compare.task import Task
from superhf.errors import ConfigError


def _cfg(**overrides) -> CompareConfig:
    values = dict(
        methods=["superhf", "grpo", "rloo"],
        seeds=[0],
        learning_rates=[5e-4, 1e-3],
        superhf_betas=[0.35],
        output_dir="/tmp/unused",
    )
    return CompareConfig(**{**values, **overrides})


def _task() -> Task:
    return Task(
        train_file="train.jsonl",
        eval_file="eval.jsonl",
        sft_file=None,
        reward_funcs=["default"],
        reward_weights=None,
        test_reward_model=None,
        info={},
    )


def _planned(cfg: CompareConfig) -> dict[str, dict]:
    return {
        run.output_dir.rsplit("/", 1)[-1]: update_settings.effective(
            run.method, planned_settings(run)
        )
        for run in expand_runs(cfg, _task())
    }


def test_the_comparisons_defaults_match_every_method_one_step_per_round():
    cfg = _cfg(superhf_variants={"negatives": {"negative_weight": 0.5}})
    planned = _planned(cfg)
    assert len(planned) == 8  # 2 rates x (superhf, negatives, grpo, rloo)
    for name, settings in planned.items():
        assert settings == {
            "optimizer_steps_per_round": 1,
            "lr_scheduler_type": "constant_with_warmup",
            "warmup_steps": 2,
            "first_update_lr_share": 0.5,  # SuperHF's warm-up, TRL's on the same schedule
            "max_grad_norm": 1.0,
            "dropout_while_sampling": 0.0,
            "dropout_while_training": 0.0,
            "weight_decay": 0.01,
        }, name
    check_updates(cfg, expand_runs(cfg, _task()))  # no refusal


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"method_settings": {"grpo": {"max_grad_norm": 0.5}}}, "max_grad_norm"),
        ({"lora_dropout": 0.05}, "dropout_while_training"),
        ({"method_settings": {"superhf": {"gradient_accumulation_steps": 1}}}, "optimizer_steps"),
        ({"method_settings": {"rloo": {"num_iterations": 2}}}, "optimizer_steps_per_round"),
        ({"method_settings": {"superhf": {"warmup_steps": 0}}}, "warmup_steps"),
    ],
)
def test_a_comparison_whose_updates_differ_is_refused_naming_the_setting(overrides, field):
    cfg = _cfg(**overrides)
    with pytest.raises(ConfigError, match=field) as err:
        check_updates(cfg, expand_runs(cfg, _task()))
    assert "allow_mismatched_updates" in str(err.value)
    check_updates(_cfg(**overrides, allow_mismatched_updates=True), expand_runs(cfg, _task()))


def test_a_variant_may_differ_only_where_its_own_option_changes_the_update():
    epochs = _cfg(superhf_variants={"epochs": {"num_train_epochs": 3}})
    assert _planned(epochs)["superhf_epochs-lr0.0005-b0.35-s0"]["optimizer_steps_per_round"] == 3
    check_updates(epochs, expand_runs(epochs, _task()))  # its definition: shown, not refused
    clipped = _cfg(superhf_variants={"clipped": {"max_grad_norm": 0.1}})
    with pytest.raises(ConfigError, match="max_grad_norm"):
        check_updates(clipped, expand_runs(clipped, _task()))


def test_transformers_warm_up_starts_at_zero_superhfs_one_step_earlier():
    assert update_settings.first_update_lr_share("constant_with_warmup", 2, shifted=False) == 0
    assert update_settings.first_update_lr_share("constant_with_warmup", 4, shifted=True) == 0.25
    assert update_settings.first_update_lr_share("cosine", 0, shifted=False) == 1.0
    assert update_settings.first_update_lr_share("constant", 5, shifted=False) == 1.0


def test_the_table_shows_every_arm_and_the_measured_steps():
    runs = [
        {
            "name": "a",
            "method": "superhf",
            "variant": "",
            "steps": 8,
            "optimizer_steps": 8,
            "update_settings": {k: 1 for k in update_settings.MATCHED},
        },
        {
            "name": "b",
            "method": "ppo",
            "variant": "",
            "steps": 8,
            "optimizer_steps": 32,
            "update_settings": {k: 4 for k in update_settings.MATCHED},
        },
    ]
    table = update_settings.settings_table(runs)
    assert "| superhf | 1 |" in table and "| ppo | 1 |" in table
    assert "PPO takes num_ppo_epochs" in table and "| 4 | PPO" in table  # measured 32 / 8
    assert update_settings.mismatches(runs) == []  # PPO is shown, not checked


def test_measured_steps_per_round_count_trls_rounds_apart_from_its_steps():
    # TRL's progress has a line per optimizer step: with num_iterations 2, 8 steps are 4 rounds
    trl = {"optimizer_steps": 8, "steps": 8, "done": {"generation_rounds": 4}}
    assert update_settings.measured_steps_per_round(trl) == 2
    superhf = {"optimizer_steps": 8, "steps": 8, "done": {}}  # a line per iteration
    assert update_settings.measured_steps_per_round(superhf) == 1
    assert update_settings.measured_steps_per_round({"steps": 3, "done": {}}) is None
