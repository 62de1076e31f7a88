"""What a run is built from before its first iteration: the tokenizer, the prompts (split once
into training order and held-out), the reward scorers, the policy with its KL reference and
optimizer, and the model it samples from.

The trainer builds them in this order, so that bad prompts or rewards fail before the model
loads.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate.utils import set_seed
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from superhf.config import ConfigError, SuperHFConfig, check_reward_weights
from superhf.data import Prompt, PromptStats, load_prompt_dataset, prepare_prompts
from superhf.models import (
    get_peft_model,
    load_model,
    load_tokenizer,
    make_reference,
    prepare_policy,
)
from superhf.rewards.scoring import RewardFunc, RewardScorer, load_reward_funcs
from superhf.sampling_model import SamplingModel, resolve_sampling_dtype

RewardSpec = str | RewardFunc


def tokenizer_for(
    model: str | PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None
) -> PreTrainedTokenizerBase:
    """`tokenizer`, or by default the model's; with a pad token (its EOS token if it had none)."""
    if tokenizer is None:
        tokenizer = load_tokenizer(model if isinstance(model, str) else model.name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_prompts(
    train_dataset: Dataset | list[dict[str, Any]] | None,
    tokenizer: PreTrainedTokenizerBase,
    args: SuperHFConfig,
    warn: Callable[[str], None],
) -> tuple[list[Prompt], PromptStats]:
    """The usable prompts of `train_dataset` (default: `args.dataset_name`), rendered as the
    policy will see them; `warn` is told once when plain prompts reach a chat model as is."""
    if train_dataset is None:
        train_dataset = load_prompt_dataset(
            args.dataset_name, args.dataset_config, args.dataset_train_split
        )
    prompts, stats = prepare_prompts(
        train_dataset,
        tokenizer,
        args.max_prompt_length,
        source=args.dataset_name,
        apply_chat_template=args.apply_chat_template,
    )
    if not args.apply_chat_template and tokenizer.chat_template is not None:
        plain = sum(isinstance(p.prompt, str) and p.text == p.prompt for p in prompts)
        if plain:
            warn(
                f"{plain} prompts are plain strings, used as they are although the model has a "
                "chat template: an instruct model may continue them instead of answering. "
                "--apply_chat_template renders them as user messages."
            )
    return prompts, stats


def split_prompts(
    prompts: list[Prompt], args: SuperHFConfig, say: Callable[[str], None]
) -> tuple[list[int], list[Prompt], int]:
    """(training order, held-out prompts, number of iterations) from one shuffle with the
    run's seed: the last `num_eval_prompts` are held out for evaluation, never trained on; the
    rest, in order, make the iterations (at most `max_iterations`: `say` prints the note when
    there are fewer prompts than it needs)."""
    order = list(range(len(prompts)))
    random.Random(args.seed).shuffle(order)
    if args.num_eval_prompts >= len(order):
        raise ConfigError(
            f"num_eval_prompts={args.num_eval_prompts} but only {len(order)} usable prompts: "
            "lower num_eval_prompts (0 turns evaluation off)."
        )
    split = len(order) - args.num_eval_prompts
    prompt_order, eval_prompts = order[:split], [prompts[i] for i in order[split:]]
    num_iterations = len(prompt_order) // args.prompts_per_iteration
    if args.max_iterations is not None:
        if args.max_iterations > num_iterations:
            say(
                f"[yellow]max_iterations={args.max_iterations} needs "
                f"{args.max_iterations * args.prompts_per_iteration} prompts; only "
                f"{len(prompt_order)} are usable for training, so the run stops after "
                f"{num_iterations} iterations.[/yellow]"
            )
        num_iterations = min(num_iterations, args.max_iterations)
    if num_iterations == 0:
        raise ConfigError(
            f"prompts_per_iteration={args.prompts_per_iteration} but only "
            f"{len(prompt_order)} usable training prompts: lower prompts_per_iteration."
        )
    return prompt_order, eval_prompts, num_iterations


def load_scorers(
    reward_funcs: RewardSpec | Sequence[RewardSpec] | None,
    test_reward_func: RewardSpec | None,
    args: SuperHFConfig,
    device: str,
) -> tuple[RewardScorer, RewardScorer | None]:
    """The training reward (default `args.reward_funcs`, weighted) and the held-out test
    reward, if any (default `args.test_reward_model`). The test reward only watches: its
    scores never reach the filter or the loss."""
    specs = reward_funcs if reward_funcs is not None else args.reward_funcs
    specs = [specs] if isinstance(specs, str) or callable(specs) else list(specs)
    check_reward_weights(args.reward_weights, len(specs))
    funcs, weights = load_reward_funcs(specs, args.reward_weights, args.reward_batch_size, device)
    scorer = RewardScorer(funcs, weights, args.length_penalty)
    test_spec = test_reward_func if test_reward_func is not None else args.test_reward_model
    if test_spec is None:
        return scorer, None
    test_funcs, _ = load_reward_funcs([test_spec], None, args.reward_batch_size, device)
    return scorer, RewardScorer(test_funcs)


def policy_and_optimizer(
    model: str | PreTrainedModel, peft_config: Any | None, args: SuperHFConfig
) -> tuple[PreTrainedModel, PreTrainedModel | None, torch.optim.Optimizer]:
    """(policy, frozen KL reference or None, AdamW over the trainable weights). Seeded first,
    so that LoRA's initialisation repeats with the seed; under LoRA (`peft_config`, or
    `use_peft`) the reference is the adapter-disabled policy, so there is no copy."""
    set_seed(args.seed)
    if isinstance(model, str):
        model = load_model(model, args.dtype)
    if peft_config is not None:
        policy = get_peft_model(model, peft_config)
    else:
        policy = prepare_policy(model, args)
    reference = None if hasattr(policy, "disable_adapter") else make_reference(policy, args)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    return policy, reference, optimizer


def sampling_model(
    policy: PreTrainedModel, args: SuperHFConfig, device_type: str, sharded: bool
) -> SamplingModel:
    """What the policy samples from: itself, or a copy in `sampling_dtype` (auto: bf16 where
    the device computes it natively), always a copy under FSDP (`sharded`) or with
    `merge_adapter_for_sampling` under LoRA. `policy`: as accelerate prepared it, unwrapped."""
    dtype = resolve_sampling_dtype(
        args.sampling_dtype, next(policy.parameters()).dtype, device_type
    )
    merged_copy = args.merge_adapter_for_sampling and hasattr(policy, "disable_adapter")
    return SamplingModel(policy, dtype, always_copy=sharded or merged_copy)
