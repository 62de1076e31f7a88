"""The monitor's signals: the template share, the text signals of a batch, and the policy's
entropy and exact KL to its start on the answers."""

from __future__ import annotations

import math

import pytest
import torch

from superhf.config import EvalConfig
from superhf.data import Prompt
from superhf.evaluation.entropy import entropy_estimate
from superhf.evaluation.heldout import opening, sample_completions, template_share
from superhf.evaluation.signals import policy_signals, text_signals
from superhf.generation import Completion
from tests.conftest import make_tiny_llama

PROMPTS = [f"Question {i}: what do you think about topic {i}?" for i in range(4)]


def test_opening_and_template_share():
    assert opening("I'm sorry, I'm unable to provide that.") == "i'm sorry i'm"
    refusals = ["I'm sorry, I'm unable to help.", "I'm sorry; I'm not able to.", "Sure! Paris."]
    assert template_share(refusals) == pytest.approx(2 / 3)
    assert template_share(["Paris is the capital.", "Use a wrench.", "Boil it."]) == 1 / 3
    assert math.isnan(template_share(["alone"]))


def test_text_signals_of_a_collapsed_batch_against_a_varied_one():
    prompts = [Prompt(prompt=p, text=p) for p in PROMPTS]
    varied = [
        "Paris is the capital of France and sits on the Seine.",
        "Loosen the nut with a wrench, turning it counterclockwise.",
        "Boil the eggs for nine minutes, then cool them in water.",
        "A haiku has three lines of five, seven and five syllables.",
    ]
    collapsed = ["I'm not authorized to give that."] * 4
    a = text_signals(prompts, [Completion(i, t, 12, False) for i, t in enumerate(varied)])
    b = text_signals(prompts, [Completion(i, t, 9, False) for i, t in enumerate(collapsed)])
    assert b["meteor"] > 0.9 > 0.3 > a["meteor"]
    assert b["distinct_2"] < 0.3 < 0.9 < a["distinct_2"]
    assert (a["template_share"], b["template_share"]) == (0.25, 1.0)
    assert (a["mean_length"], b["mean_length"]) == (12, 9)


def _sampled(model, tokenizer):
    config = EvalConfig(
        num_generations=2, max_completion_length=8, temperature=1.0, top_p=1.0, top_k=0
    )
    torch.manual_seed(0)
    return sample_completions(model, tokenizer, PROMPTS, config)


def test_policy_signals_kl_is_zero_at_the_start_and_exact_after_a_move(tokenizer):
    from peft import LoraConfig, get_peft_model

    base = make_tiny_llama(len(tokenizer), seed=0)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    completions = _sampled(policy, tokenizer)
    start = policy_signals(policy, policy, tokenizer, PROMPTS, completions)
    assert abs(start["kl"]) < 1e-6  # LoRA's B is 0 at init: the policy is its start
    # The entropy is superhf eval's (the same positions, the same untempered distribution).
    assert start["entropy"] == pytest.approx(
        entropy_estimate(policy, tokenizer, PROMPTS, completions)["mean"], rel=1e-5
    )
    assert math.isnan(policy_signals(policy, None, tokenizer, PROMPTS, completions)["kl"])

    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 1.0)
    moved = policy_signals(policy, policy, tokenizer, PROMPTS, completions)
    assert moved["kl"] > 0.01
    # The exact KL by hand for one answer: sum over the vocabulary at each answer position.
    from superhf.evaluation.kl import completion_batches

    total = []
    for _, batch in completion_batches(tokenizer, PROMPTS, completions, 1, torch.device("cpu")):
        mask = batch.labels[:, 1:] != -100
        with torch.no_grad():
            logp = torch.log_softmax(policy(**batch.model_inputs()).logits[:, :-1], -1)
            with policy.disable_adapter():
                logq = torch.log_softmax(policy(**batch.model_inputs()).logits[:, :-1], -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)[mask]
        total.append(float(kl.mean()))
    assert moved["kl"] == pytest.approx(sum(total) / len(total), rel=1e-4)
