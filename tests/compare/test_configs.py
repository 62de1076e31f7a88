"""The shipped comparison configs parse, and those that share an output folder share the task
(the folder's reward models, start evaluation and finished runs are reused between them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from superhf.compare.config import parse_compare_args

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "compare").glob("*.yaml"))
SHARED = (
    "model_name_or_path",
    "dataset_name",
    "dataset_train_split",
    "eval_split",
    "num_eval_prompts",
    "num_generations",
    "max_completion_length",
    "temperature",
    "top_p",
    "prompts_per_step",
    "train_reward_model_data",
    "train_reward_model_split",
    "test_reward_model_data",
    "test_reward_model_split",
    "sampled_token_budget",
    "eval_max_completion_length",
    "eval_seed",
    "meteor_pairs",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path):
    cfg = parse_compare_args(["--config", str(path)])
    assert cfg.methods and cfg.seeds


def test_configs_sharing_an_output_dir_share_the_task():
    by_dir: dict[str, list] = {}
    for path in CONFIGS:
        cfg = parse_compare_args(["--config", str(path)])
        by_dir.setdefault(cfg.output_dir, []).append((path.name, cfg))
    shared = [group for group in by_dir.values() if len(group) > 1]
    assert shared  # hh_reduced, hh_lr_probe and hh_ablations write runs/compare-hh
    for group in shared:
        (first_name, first), *others = group
        for name, cfg in others:
            for field in SHARED:
                assert getattr(cfg, field) == getattr(first, field), (name, first_name, field)
            # the same method settings where both run a method (a run's folder name omits them)
            for method in set(cfg.method_settings) & set(first.method_settings):
                assert cfg.method_settings[method] == first.method_settings[method], (name, method)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_matches_the_methods_updates(path):
    """No shipped comparison is refused by the matched-updates check (planned settings)."""
    from types import SimpleNamespace

    from superhf.compare.harness import check_updates, expand_runs

    cfg = parse_compare_args(["--config", str(path)])
    task = SimpleNamespace(
        train_file="t", sft_file="s", test_reward_model=None, reward_funcs=["r"],
        reward_weights=None,
    )  # fmt: skip
    check_updates(cfg, expand_runs(cfg, task))


def test_a_sweep_runs_every_method_before_superhfs_options_and_seed_by_seed():
    """fair_hh.yaml cut short after its main arms' first seed still compares the methods."""
    from types import SimpleNamespace

    from superhf.compare.harness import expand_runs

    cfg = parse_compare_args(["--config", "configs/compare/fair_hh.yaml"])
    task = SimpleNamespace(
        train_file="t", sft_file="s", test_reward_model=None, reward_funcs=["r"],
        reward_weights=None,
    )  # fmt: skip
    runs = expand_runs(cfg, task)
    first = [r for r in runs if r.seed == 0]
    assert runs[: len(first)] == first  # seed-major
    kinds = [bool(r.variant) for r in first]
    assert kinds == sorted(kinds)  # the methods (no option), then the options
    assert {r.method for r in first if not r.variant} == {"superhf", "grpo", "rloo"}
    assert {r.variant for r in first if r.variant} == {
        "negatives",
        "advantage",
        "rank",
        "epochs",
        "n1",
    }
