"""Slow: the bf16 sampling copy of the real SmolLM2-135M-Instruct against the fp32 policy.

bf16 only changes which samples are drawn; this bounds how much. bench/bench_sampling.py
measures the same over 1,536 positions (mean KL 0.0015, total variation 0.019 there).
"""

from __future__ import annotations

import pytest
import torch

from superhf.config import EMBEDDED_MODEL, SuperHFConfig
from superhf.data import embedded_prompts, prepare_prompts
from superhf.models import load_model, load_tokenizer, prepare_policy
from superhf.sampling_model import SamplingModel


@pytest.mark.slow
def test_bf16_copy_keeps_the_next_token_distributions_close():
    torch.manual_seed(0)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    policy = prepare_policy(load_model(EMBEDDED_MODEL), SuperHFConfig(output_dir="unused"))
    with torch.no_grad():  # a trained-looking adapter, so merging it matters
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    policy.eval()
    copy = SamplingModel(policy, torch.bfloat16).model
    prompts, _ = prepare_prompts(embedded_prompts("test"), tokenizer, 128)
    kls, tvs = [], []
    with torch.no_grad():
        for prompt in prompts[:4]:
            ids = tokenizer(prompt.text, add_special_tokens=False, return_tensors="pt").input_ids
            ids = policy.generate(ids, do_sample=False, max_new_tokens=16)
            logp = torch.log_softmax(policy(input_ids=ids).logits[0].float(), -1)
            logq = torch.log_softmax(copy(input_ids=ids).logits[0].float(), -1)
            kls.append((logp.exp() * (logp - logq)).sum(-1))
            tvs.append(0.5 * (logp.exp() - logq.exp()).abs().sum(-1))
    kl, tv = torch.cat(kls), torch.cat(tvs)
    assert kl.mean() < 0.01, kl.mean()
    assert tv.mean() < 0.05, tv.mean()
    assert kl.mean() > 0  # bf16 really was used
