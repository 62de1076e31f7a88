"""Settings of `superhf compare`: one task shared by every method, and the sweep over them.

    superhf compare --config configs/compare/hh.yaml --output_dir runs/compare
    superhf compare --help            # every setting, grouped

Parsed like every command (defaults, then `--config FILE.yaml`, then `--name value` flags);
torch is not imported here, so `--help` and a refused setting answer at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from superhf.config import (
    MeteorSettings,
    ScheduleSettings,
    SuperHFConfig,
    TaskSettings,
)
from superhf.errors import ConfigError
from superhf.settings import (
    CheckedSettings,
    check_at_least,
    config_field,
    parse_config_args,
    with_default,
)

SUPERHF_DEFAULT_BETA = SuperHFConfig.beta
METHODS = ("superhf", "best_of_n", "sft", "grpo", "rloo", "ppo")
HALF_SPLITS = ("first-half", "second-half")
DEFAULT_BETAS = {"grpo": 0.0, "rloo": 0.05, "ppo": 0.05, "sft": 0.0, "best_of_n": 0.0}
"""The KL coefficient of each non-SuperHF method unless `method_settings[m].beta` says
otherwise: TRL 1.16's GRPO and RLOO defaults, and RLOO's for PPO. SFT and best-of-n have none."""


def is_superhf_default(arm: dict[str, Any]) -> bool:
    """A results row or record of SuperHF at its default beta with no option set: the arm the
    claims and the frontier speak for."""
    return (
        arm["method"] == "superhf"
        and not arm.get("variant")
        and arm["beta"] == SUPERHF_DEFAULT_BETA
    )


@dataclass
class CompareConfig(CheckedSettings, TaskSettings, ScheduleSettings, MeteorSettings):
    """Every setting of a comparison: the task every method shares (`TaskSettings`: the start
    policy, LoRA, prompts, sampling, rewards), the schedule, the sampled-token budget and what
    is swept (methods, seeds, learning rates, betas)."""

    # --- prompts (the rest: TaskSettings) ----------------------------------------------------
    eval_split: str = config_field(
        "test",
        "Held-out evaluation prompts, as dataset_train_split. A prompt also in the training "
        "split is dropped: no method trains on an eval prompt.",
        "prompts",
    )
    num_eval_prompts: int = config_field(
        64, "Evaluate on the first this many held-out prompts (paper: 200).", "prompts"
    )
    sft_dataset_name: str | None = config_field(
        None,
        "Preference pairs whose chosen answers the SFT baseline trains on (unset: the training "
        "rows). Pairs asking an eval prompt are dropped.",
        "prompts",
    )
    sft_dataset_split: str = config_field(
        "first-half", "Rows of sft_dataset_name to use (as dataset_train_split).", "prompts"
    )

    # --- generation (the rest: TaskSettings) -------------------------------------------------
    prompts_per_step: int = config_field(
        4, "Prompts per update (SuperHF's prompts_per_iteration; TRL's per step).", "generation"
    )

    # --- rewards (the rest: TaskSettings) ----------------------------------------------------
    train_reward_model_data: str | None = config_field(
        None,
        "Preference pairs to build the train reward model from, once, into "
        "output_dir/reward_models/train; it replaces reward_funcs.",
        "rewards",
    )
    train_reward_model_split: str = config_field(
        "first-half", "Rows of train_reward_model_data the train RM learns from.", "rewards"
    )
    test_reward_model_data: str | None = config_field(
        None,
        "Preference pairs to build the test reward model from, once, into "
        "output_dir/reward_models/test; it replaces test_reward_model.",
        "rewards",
    )
    test_reward_model_split: str = config_field(
        "second-half", "Rows of test_reward_model_data the test RM learns from.", "rewards"
    )
    reward_model_settings: dict[str, Any] = config_field(
        {},
        "`superhf reward train` settings for both built reward models, e.g. "
        "{model_name_or_path: embedded:all-MiniLM-L6-v2, max_length: 512}.",
        "rewards",
    )

    # --- training (the rest: ScheduleSettings) -----------------------------------------------
    lr_scheduler_type: str = with_default(
        ScheduleSettings, "lr_scheduler_type", "constant_with_warmup"
    )
    max_grad_norm: float | None = with_default(ScheduleSettings, "max_grad_norm", 1.0)
    lora_dropout: float = with_default(TaskSettings, "lora_dropout", 0.0)

    # --- methods and budget ----------------------------------------------------------------
    methods: list[str] = config_field(
        ["superhf", "best_of_n", "sft", "grpo", "rloo", "ppo"],
        f"Methods to run, of {', '.join(METHODS)}. grpo/rloo need `pip install "
        "'superhf[compare]'`, ppo `make ppo-env` (else they are skipped).",
        "methods",
    )
    sampled_token_budget: int = config_field(
        20000,
        "Completion tokens each trained method may sample (prompts not counted); a run stops "
        "after the step that reaches it. SFT trains on budget / num_generations tokens.",
        "methods",
    )
    seeds: list[int] = config_field([0, 1, 2], "Seeds; every method runs each.", "methods")
    method_seeds: dict[str, list[int]] = config_field(
        {},
        "Other seeds for some methods, e.g. {ppo: [0]} (a costly method); a SuperHF variant "
        "is named superhf_NAME here.",
        "methods",
    )
    learning_rates: list[float] = config_field(
        [5e-4],
        "The learning-rate sweep of every trained method; each reports the rate with its best "
        "mean train reward at its last in-run evaluation (the training split's held-out "
        "prompts; never the test RM).",
        "methods",
    )
    sweep_seeds: list[int] | None = config_field(
        None,
        "Seeds at which every learning rate runs. The other seeds run afterwards at each arm's "
        "chosen rate only (chosen on these seeds' in-run train reward). Unset: every seed at "
        "every rate.",
        "methods",
    )
    chosen_rates_from: str | None = config_field(
        None,
        "Another comparison's results.json: run each arm only at the learning rate that one "
        "chose for it (e.g. the 16k sweep's, at a 48k budget). Arms it did not choose a rate "
        "for do not run.",
        "methods",
    )
    superhf_betas: list[float] = config_field(
        [0.0, 0.1, 0.35, 1.0],
        "SuperHF's KL sweep (beta = 0 is the expert-iteration / RAFT ablation).",
        "methods",
    )
    kl_sweep_seeds: list[int] | None = config_field(
        None,
        "Seeds of the SuperHF betas other than 0 and SuperHF's default (the KL sweep's inner "
        "points). Unset: every seed of superhf.",
        "methods",
    )
    superhf_variants: dict[str, dict[str, Any]] = config_field(
        {},
        "Named SuperHF variants, each a row of its own, e.g. {negatives: {negative_weight: "
        "0.5}}: SuperHF settings over method_settings.superhf, at its default beta unless set.",
        "methods",
    )
    method_settings: dict[str, dict[str, Any]] = config_field(
        {},
        "Per-method extras, e.g. {superhf: {eval_steps: 5}, grpo: {loss_type: dapo}}: SuperHF, "
        "TRL or SFT settings; `beta` sets a baseline's KL coefficient, a list sweeps it.",
        "methods",
    )

    level_margin: float = config_field(
        0.05,
        "Two methods' held-out rewards count as level when the 95 percent paired-bootstrap "
        "interval of their difference lies within +-this (reward units); set before the runs.",
        "methods",
    )
    allow_mismatched_updates: bool = config_field(
        False,
        "Run and report even when the methods' updates differ in a matched setting (steps per "
        "round, warm-up, clipping, dropout, weight decay); the report marks it. Off: refused.",
        "methods",
    )

    # --- evaluation ------------------------------------------------------------------------
    eval_max_completion_length: int | None = config_field(
        None,
        "Most new tokens per evaluation answer (unset: max_completion_length; paper: 128).",
        "evaluation",
    )
    eval_seed: int = config_field(
        0, "Sampling seed of every evaluation, so runs differ only by their policy.", "evaluation"
    )

    # --- output --------------------------------------------------------------------------
    output_dir: str = config_field(
        "runs/compare",
        "Where runs/, reward_models/, data/, results.json, the plots and report.md go; "
        "finished runs in it are never redone.",
        "output",
    )
    report_only: bool = config_field(
        False,
        "Write results.json, the plots and report.md from what is finished so far and run "
        "nothing; safe beside a running comparison of the same output_dir.",
        "output",
    )
    isolate_runs: bool = config_field(
        True,
        "Run each method run in its own Python process (its own peak memory; a crash is "
        "recorded). Off: in this process (tests).",
        "output",
    )

    def validate(self) -> None:
        super().validate()
        self.check_task()
        self.check_schedule()
        self.check_meteor()
        check_at_least(self, 1, "num_eval_prompts", "prompts_per_step", "sampled_token_budget")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"methods: unknown {unknown} (or none given); choose from {', '.join(METHODS)}."
            )
        for name in ("seeds", "learning_rates", "superhf_betas"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is empty: give at least one value.")
        if any(lr <= 0 for lr in self.learning_rates):
            raise ConfigError(f"learning_rates must all be > 0, got {self.learning_rates}.")
        if any(b < 0 or not math.isfinite(b) for b in self.superhf_betas):
            raise ConfigError(f"superhf_betas must all be >= 0, got {self.superhf_betas}.")
        arms = {f"superhf_{name}" for name in self.superhf_variants}
        for method in [*self.method_seeds, *self.method_settings]:
            if method not in METHODS and not (method in arms and method in self.method_seeds):
                raise ConfigError(
                    f"method_seeds / method_settings: unknown method {method!r}; "
                    f"use one of {', '.join(METHODS)}."
                )
        known = {f.name for f in fields(SuperHFConfig)}
        for name, value in self.superhf_variants.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)) or not isinstance(value, dict):
                raise ConfigError(
                    f"superhf_variants.{name}: a variant is a name of letters, digits and _ "
                    f"mapped to SuperHF settings, got {value!r}."
                )
            if unknown_fields := sorted(set(value) - known):
                raise ConfigError(
                    f"superhf_variants.{name}: {unknown_fields} are not SuperHF settings "
                    "(see `superhf train --help`)."
                )
            if "superhf" not in self.methods:
                raise ConfigError("superhf_variants needs superhf in methods.")
        for method, value in self.method_settings.items():
            if not isinstance(value, dict):
                raise ConfigError(
                    f"method_settings.{method} must be a mapping of setting: value, got {value!r}."
                )
        if self.train_reward_model_data is not None and (
            self.reward_funcs != ["default"] or self.reward_weights is not None
        ):
            raise ConfigError(
                "train_reward_model_data builds the train reward model, which replaces "
                "reward_funcs: leave reward_funcs and reward_weights unset, or drop "
                "train_reward_model_data."
            )
        if self.test_reward_model_data is not None and self.test_reward_model is not None:
            raise ConfigError(
                "test_reward_model_data builds the test reward model: leave test_reward_model "
                "unset, or drop test_reward_model_data."
            )

    def seeds_of(self, method: str, variant: str = "") -> list[int]:
        arm = f"{method}_{variant}" if variant else method
        return list(self.method_seeds.get(arm, self.method_seeds.get(method, self.seeds)))

    def runs_beta_at_seed(self, beta: float, seed: int) -> bool:
        """Whether SuperHF runs `beta` at `seed` (the sweep's inner points may have fewer)."""
        if self.kl_sweep_seeds is None or beta in (0.0, SUPERHF_DEFAULT_BETA):
            return True
        return seed in self.kl_sweep_seeds

    def extra_of(self, method: str) -> dict[str, Any]:
        """The method's extras, `beta` taken out (it is a MethodRun field)."""
        return {k: v for k, v in self.method_settings.get(method, {}).items() if k != "beta"}

    def betas_of(self, method: str) -> list[float]:
        """A baseline's KL coefficients: method_settings' `beta`, one value or a list to sweep
        (e.g. {grpo: {beta: [0.0, 0.04]}}), else the method's default."""
        value = self.method_settings.get(method, {}).get("beta", DEFAULT_BETAS[method])
        return [float(b) for b in value] if isinstance(value, list) else [float(value)]


def parse_compare_args(argv: list[str]) -> CompareConfig:
    """`superhf compare [--config FILE] [--name value ...]`."""
    return parse_config_args(
        CompareConfig,
        argv,
        prog="superhf compare",
        description="Run SuperHF beside best-of-n, SFT and TRL's GRPO/RLOO/PPO on one task at "
        "an equal sampled-token budget, evaluate every run on the same held-out prompts "
        "(train and test reward, METEOR, KL, entropy, length, distinct-n) and write "
        "results.json, plots and report.md. Run it again to continue a stopped comparison "
        "(finished runs are kept); configs/compare/quick.yaml finishes in minutes.",
    )
