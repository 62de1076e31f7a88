"""The model that samples: a merged copy of the policy in the sampling dtype, kept current.

Tiny random-init Llama (mechanics only); the bf16 distribution on the real model is measured
in bench/bench_sampling.py.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig

from superhf.generation import (
    NucleusSampler,
    inverse_cdf_sample,
    sample_shared_prompts,
    sample_uniforms,
)
from superhf.models import get_peft_model
from superhf.sampling_model import (
    PackedLinear,
    SamplingModel,
    changing_weights,
    merged_weights,
    native_bf16,
    onednn_bf16_linear,
    resolve_sampling_dtype,
)
from tests.conftest import make_tiny_llama

PROMPTS = [[5, 17, 230, 9], [44, 3001, 12]]


def _lora_policy(tokenizer, seed: int = 0):
    policy = get_peft_model(
        make_tiny_llama(len(tokenizer), seed=seed),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    with torch.no_grad():  # B starts at zero: give the adapter something to merge
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return policy.eval()


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def test_merged_weights_give_the_policys_logits(tokenizer):
    policy = _lora_policy(tokenizer)
    sampler = SamplingModel(policy, torch.float64)  # another dtype forces a copy
    assert sampler.copy is not None and sampler.model is sampler.copy
    assert not any("lora" in name for name, _ in sampler.copy.named_parameters())
    torch.testing.assert_close(
        _logits(sampler.copy, PROMPTS[0]), _logits(policy, PROMPTS[0]), atol=1e-5, rtol=0
    )
    with policy.disable_adapter():  # the adapter made a difference: it was merged, not lost
        assert (_logits(policy, PROMPTS[0]) - _logits(sampler.copy, PROMPTS[0])).abs().max() > 1e-3


def test_a_full_model_is_copied_as_it_is(tokenizer):
    model = make_tiny_llama(len(tokenizer)).eval()
    weights = merged_weights(model)
    assert weights.keys() == model.state_dict().keys()


def test_the_policys_own_dtype_samples_from_the_policy(tokenizer):
    policy = _lora_policy(tokenizer)
    sampler = SamplingModel(policy, torch.float32)
    assert sampler.copy is None and sampler.model is policy
    sampler.refresh()  # nothing to do


def test_refresh_follows_the_policys_updates(tokenizer):
    policy = _lora_policy(tokenizer)
    sampler = SamplingModel(policy, torch.bfloat16)
    assert next(sampler.copy.parameters()).dtype == torch.bfloat16
    before = _logits(sampler.copy, PROMPTS[1])
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(1.0)
    assert torch.equal(_logits(sampler.copy, PROMPTS[1]), before)  # stale until refreshed
    sampler.refresh()
    after = _logits(sampler.copy, PROMPTS[1])
    policy_logits = _logits(policy, PROMPTS[1])
    assert (after - before).abs().max() > 0.1
    # bf16 weights: close to the fp32 policy, not equal
    assert (after - policy_logits).abs().max() < 0.05 * policy_logits.abs().max()


def test_refresh_copies_frozen_weights_once(tokenizer):
    """After the first copy only the adapted and trainable weights are copied again: a LoRA
    policy's other weights are frozen (changed here by hand only to show they are skipped)."""
    policy = _lora_policy(tokenizer)
    sampler = SamplingModel(policy, torch.bfloat16)
    changing = changing_weights(policy)
    assert "model.layers.0.self_attn.q_proj.weight" in changing
    assert "model.layers.0.mlp.up_proj.weight" not in changing
    copied = dict(sampler.copy.named_parameters())
    frozen = copied["model.layers.0.mlp.up_proj.weight"].clone()
    adapted = copied["model.layers.0.self_attn.q_proj.weight"].clone()
    with torch.no_grad():
        policy.get_base_model().model.layers[0].mlp.up_proj.weight.add_(1.0)
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(1.0)
    sampler.refresh()
    assert torch.equal(copied["model.layers.0.mlp.up_proj.weight"], frozen)
    assert not torch.equal(copied["model.layers.0.self_attn.q_proj.weight"], adapted)
    full = make_tiny_llama(len(tokenizer))  # full fine-tuning: every weight can change
    assert changing_weights(full) == {name for name, _ in full.named_parameters()}


@pytest.mark.skipif(not onednn_bf16_linear(), reason="no oneDNN bf16 linear in this torch/CPU")
def test_the_bf16_copys_prepacked_linears_match_plain_ones_and_follow_refresh(tokenizer):
    """On CPU the bf16 copy multiplies by oneDNN-prepacked weights: the logits of plain bf16
    linears over the same weights (to bf16 rounding), and repacked on refresh, the LM head
    tied to the embeddings (full fine-tuning, so they change) included."""
    policy = make_tiny_llama(len(tokenizer), seed=1).eval()
    sampler = SamplingModel(policy, torch.bfloat16)
    copy = sampler.copy
    assert isinstance(copy.lm_head, PackedLinear)
    assert isinstance(copy.model.layers[0].mlp.down_proj, PackedLinear)
    assert copy.lm_head.weight is copy.model.embed_tokens.weight

    def plain_bf16_logits() -> torch.Tensor:
        plain = make_tiny_llama(len(tokenizer), seed=1).to(torch.bfloat16).eval()
        plain.load_state_dict(policy.state_dict())
        assert not any(isinstance(m, PackedLinear) for m in plain.modules())
        return _logits(plain, PROMPTS[0])

    def assert_bf16_close(got: torch.Tensor, expected: torch.Tensor) -> None:
        # oneDNN's packed kernels sum in another order: a bf16 rounding step apart at most
        assert (got - expected).abs().max() <= 0.01 * expected.abs().max()

    assert_bf16_close(_logits(copy, PROMPTS[0]), plain_bf16_logits())
    before = _logits(copy, PROMPTS[0])
    with torch.no_grad():
        policy.model.embed_tokens.weight.mul_(-2.0)
    sampler.refresh()
    after = _logits(copy, PROMPTS[0])
    assert (after - before).abs().max() > 0.1
    assert_bf16_close(after, plain_bf16_logits())


def test_auto_picks_bf16_only_where_it_is_native():
    native, reason = native_bf16("cpu")
    assert isinstance(native, bool) and reason
    auto = resolve_sampling_dtype("auto", torch.float32, "cpu")
    assert auto == (torch.bfloat16 if native else torch.float32)
    assert resolve_sampling_dtype("float32", torch.float32, "cpu") == torch.float32
    assert resolve_sampling_dtype("bfloat16", torch.float32, "cpu") == torch.bfloat16
    assert native_bf16("mps")[0] is False


def _reference_draws(model, prompt, row, uniforms, sampler, margin=1e-5):
    """Teacher-forced on `row` (one sequence alone, the whole prefix recomputed each step: no
    cache, no padding): per step, the model's logits and the tokens the reference draw gives
    for uniforms u - margin, u and u + margin (the middle one is the draw itself)."""
    ids, draws, logits = list(prompt), [], []
    for step, token in enumerate(row):
        step_logits = _logits(model, ids)[-1:]
        logits.append(step_logits[0])
        filtered = sampler(torch.tensor([ids]), step_logits)
        u = uniforms[step : step + 1]
        draws.append(
            [
                int(inverse_cdf_sample(filtered, (u + d).clamp(0, 1 - 1e-12)))
                for d in (-margin, 0, margin)
            ]
        )
        ids.append(token)
    return draws, logits


@pytest.mark.parametrize(
    ("dtype", "merged"), [(torch.float32, False), (torch.float32, True), (torch.bfloat16, True)]
)
def test_decode_loop_draws_the_reference_loops_tokens(tokenizer, dtype, merged, monkeypatch):
    """Same random numbers, same tokens as a plain cache-free loop, and logits within 1e-4 in
    fp32: over the LoRA policy itself whether the loop samples from it or from its merged fp32
    copy (the trainer's default); bf16: over the bf16 copy, within bf16's rounding.

    "Same token" up to float rounding: the tiny random model is nearly uniform (a top-p 0.95
    nucleus of ~46,000 tokens), where logits 1e-7 to 1e-5 apart can put a uniform on either
    side of a token boundary (the merged fp32 copy: 1 draw of these 72). So every draw must be
    the one the reference's logits give for its uniform, or for the uniform moved by 1e-5 (a
    neighbour at the boundary), and at least 90% of them exactly the reference's.
    """
    policy = _lora_policy(tokenizer, seed=3)
    model = SamplingModel(policy, dtype, always_copy=merged).model
    assert (model is policy) != merged
    reference_model = policy if dtype == torch.float32 else model
    sampler = NucleusSampler(1.0, 0, 0.95)
    seeds, n, steps, stop = list(range(100, 106)), 3, 12, [2]
    seen: list[torch.Tensor] = []
    real_sample = NucleusSampler.sample

    def spy(self, scores, uniforms):
        seen.append(scores)
        return real_sample(self, scores, uniforms)

    monkeypatch.setattr(NucleusSampler, "sample", spy)
    rows = sample_shared_prompts(model, PROMPTS, n, steps, sampler, stop, 0, seeds)
    monkeypatch.setattr(NucleusSampler, "sample", real_sample)
    uniforms = sample_uniforms(seeds, steps)
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    exact = total = 0
    for i, row in enumerate(rows):
        assert len(row) == steps or row[-1] in stop
        draws, logits = _reference_draws(
            reference_model, PROMPTS[i // n], row, uniforms[i], sampler
        )
        for step, (token, allowed, reference) in enumerate(zip(row, draws, logits, strict=True)):
            assert token in allowed, (i, step, token, allowed)
            exact, total = exact + (token == allowed[1]), total + 1
            running = seen[step]  # the loop's row i at that step
            assert running.shape[0] == len(rows)  # no row stopped early in this setting
            torch.testing.assert_close(running[i], reference, atol=tolerance, rtol=0)
    assert exact >= 0.9 * total, (exact, total)


def test_superhf_train_samples_from_the_refreshed_bf16_copy_and_trains_on_its_ids(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The real `superhf train --sampling_dtype bfloat16` (LoRA): every sampling call gets the
    bf16 copy, holding the policy's merged weights of that moment, and the loss trains on the
    ids that copy sampled."""
    import json

    from typer.testing import CliRunner

    import superhf.generation
    import superhf.train.update
    from superhf.batching import build_training_batch
    from superhf.cli import app
    from tests.train.test_training_tokens import ROWS, Spy

    sampled = Spy(superhf.generation.sample_shared_prompts)
    trained = Spy(build_training_batch)
    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", sampled)
    monkeypatch.setattr(superhf.train.update, "build_training_batch", trained)
    copies: list[dict[str, torch.Tensor]] = []
    real_refresh = SamplingModel.refresh

    def refresh(self):
        real_refresh(self)
        current = merged_weights(self.policy)
        for name, param in self.copy.named_parameters():  # the copy is the policy now
            assert torch.equal(param, current[name].to(torch.bfloat16)), name
        copies.append({n: p.clone() for n, p in self.copy.named_parameters()})

    monkeypatch.setattr(SamplingModel, "refresh", refresh)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = tmp_path / "config.yaml"
    config.write_text("stop_sequences: []\n")  # trained ids = sampled ids through the stop token
    args = [
        "train",
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(data),
        "--reward_funcs", "tests.train.test_training_tokens:constant_reward",
        "--num_generations", "4", "--num_kept_per_prompt", "4",
        "--max_completion_length", "6", "--prompts_per_iteration", "2",
        "--max_iterations", "2", "--num_eval_prompts", "0", "--learning_rate", "0.05",
        "--config", str(config), "--sampling_dtype", "bfloat16",
        "--output_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(copies) == 3 and len(sampled.calls) == 2  # built, then before each iteration
    assert all(next(a[0].parameters()).dtype == torch.bfloat16 for a, _, _ in sampled.calls)
    # the update between the two iterations reached the copy
    assert any(not torch.equal(copies[1][n], copies[2][n]) for n in copies[1])
    sampled_rows = {tuple(row) for _, _, rows in sampled.calls for row in rows}
    assert trained.calls
    for args_, _, _ in trained.calls:
        assert all(tuple(ids) in sampled_rows for ids in args_[1])


@pytest.mark.parametrize("merge", [True, False])
def test_a_lora_policy_samples_from_its_merged_copy_unless_told_not_to(tmp_path, tokenizer, merge):
    """fp32 LoRA training: the sampling model is a plain fp32 copy with the adapter merged
    (same next-token logits as the policy), or with --no_merge_adapter_for_sampling the policy
    itself; a full fine-tune in its own dtype never copies."""
    from superhf.config import SuperHFConfig
    from superhf.train.trainer import SuperHFTrainer

    rows = [{"prompt": f"Question {i}?"} for i in range(4)]
    config = SuperHFConfig(
        output_dir=str(tmp_path), sampling_dtype="float32", num_eval_prompts=0,
        merge_adapter_for_sampling=merge, lora_target_modules=["q_proj", "v_proj"],
    )  # fmt: skip
    policy = make_tiny_llama(len(tokenizer))
    trainer = SuperHFTrainer(
        model=policy, args=config, reward_funcs=lambda p, c, **k: [0.0] * len(c),
        processing_class=tokenizer, train_dataset=rows,
    )  # fmt: skip
    sampling = trainer.sampling_model
    wrapped = trainer.accelerator.unwrap_model(trainer.model)
    if not merge:
        assert sampling.copy is None and sampling.model is wrapped
        return
    assert sampling.copy is not None and next(sampling.copy.parameters()).dtype == torch.float32
    assert not any("lora" in name for name, _ in sampling.copy.named_parameters())
    with torch.no_grad():  # as after an update: the adapter now changes the outputs
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    sampling.refresh()
    torch.testing.assert_close(
        _logits(sampling.model, PROMPTS[0]), _logits(wrapped.eval(), PROMPTS[0]), atol=1e-5, rtol=0
    )
    full = SuperHFConfig(output_dir=str(tmp_path / "full"), sampling_dtype="float32",
                         num_eval_prompts=0, use_peft=False)  # fmt: skip
    full_trainer = SuperHFTrainer(
        model=make_tiny_llama(len(tokenizer)), args=full, processing_class=tokenizer,
        reward_funcs=lambda p, c, **k: [0.0] * len(c), train_dataset=rows,
    )  # fmt: skip
    assert full_trainer.sampling_model.copy is None
