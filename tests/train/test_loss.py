"""The loss trains exactly the completion ids given (their end token included, nothing added),
and its KL behaves like a KL."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from superhf.batching import IGNORE_INDEX, build_training_batch
from superhf.train.loss import superhf_loss
from tests.conftest import make_tiny_llama

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12]]
COMPLETIONS = [[20, 21, 22, 23, 2], [30]]  # ended on EOS (id 2); clipped at the length limit


@pytest.mark.parametrize("side", ["left", "right"])
def test_labels_are_exactly_the_completion_ids(tokenizer, side):
    """Nothing is appended: a clipped completion gets no EOS to learn (it did not stop)."""
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer, padding_side=side)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        labelled = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        assert labelled == c
        real = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
        assert real == p + c
        # positions count real tokens from 0, whatever the padding
        assert batch.position_ids[i][batch.attention_mask[i].bool()].tolist() == list(
            range(len(p) + len(c))
        )


@pytest.mark.parametrize("side", ["left", "right"])
def test_gradient_touches_only_positions_predicting_completion(tokenizer, side):
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer, padding_side=side)
    vocab = 64
    labels = batch.labels.clamp(max=vocab - 1).where(batch.labels != IGNORE_INDEX, IGNORE_INDEX)
    logits = torch.randn(*labels.shape, vocab, requires_grad=True)
    superhf_loss(logits, labels, None, beta=0.0).loss.backward()
    touched = logits.grad.abs().sum(-1) > 0
    # logits at t predict token t+1: exactly the positions before a label
    expected = torch.zeros_like(touched)
    expected[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    assert torch.equal(touched, expected)
    assert int(expected.sum()) == sum(len(c) for c in COMPLETIONS)


def test_loss_same_under_left_and_right_padding(tokenizer):
    model = make_tiny_llama(len(tokenizer)).eval()
    results = []
    for side in ("left", "right"):
        batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer, padding_side=side)
        with torch.no_grad():
            logits = model(**batch.model_inputs()).logits
            ref = make_tiny_llama(len(tokenizer), seed=1)(**batch.model_inputs()).logits
        results.append(superhf_loss(logits, batch.labels, ref, beta=0.5))
    left, right = results
    torch.testing.assert_close(left.sft_loss, right.sft_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left.kl, right.kl, atol=1e-5, rtol=1e-5)


def test_logits_to_keep_gives_the_same_loss(tokenizer):
    model = make_tiny_llama(len(tokenizer)).eval()
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer, padding_side="left")
    keep = batch.logits_to_keep()
    assert keep < batch.labels.shape[1]
    with torch.no_grad():
        full = superhf_loss(model(**batch.model_inputs()).logits, batch.labels, None, 0.0)
        cut_logits = model(**batch.model_inputs(), logits_to_keep=keep).logits
        cut = superhf_loss(cut_logits, batch.labels[:, -keep:], None, 0.0)
    torch.testing.assert_close(full.sft_loss, cut.sft_loss)


def _kl(policy, reference, batch, beta=1.0):
    logits = policy(**batch.model_inputs()).logits
    with torch.no_grad():
        ref_logits = reference(**batch.model_inputs()).logits
    return superhf_loss(logits, batch.labels, ref_logits, beta)


def test_kl_zero_for_identical_models_positive_after_perturbation(tokenizer):
    reference = make_tiny_llama(len(tokenizer)).eval()
    policy = copy.deepcopy(reference)
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer)
    assert abs(float(_kl(policy, reference, batch).kl)) < 1e-6
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = _kl(policy, reference, batch, beta=0.35)
    assert float(out.kl) > 1e-4
    # loss/kl is beta times the sum over the 2 examples of their mean KL
    torch.testing.assert_close(out.kl_loss, 0.35 * 2 * out.kl, rtol=1e-5, atol=1e-7)


def test_step_on_kl_alone_moves_policy_toward_reference(tokenizer):
    reference = make_tiny_llama(len(tokenizer)).eval()
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer)

    def distance() -> float:
        pairs = zip(policy.parameters(), reference.parameters(), strict=True)
        return sum(float((a - b).detach().pow(2).sum()) for a, b in pairs)

    optimizer = torch.optim.SGD(policy.parameters(), lr=2.0)
    kls, dist_before = [float(_kl(policy, reference, batch).kl)], distance()
    for _ in range(10):
        optimizer.zero_grad()
        _kl(policy, reference, batch).kl_loss.backward()
        optimizer.step()
        kls.append(float(_kl(policy, reference, batch).kl))
    assert kls[-1] < 0.7 * kls[0], kls
    assert distance() < dist_before


def test_no_reference_means_no_kl_term(tokenizer):
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer)
    logits = torch.randn(*batch.labels.shape, len(tokenizer))
    out = superhf_loss(logits, batch.labels, None, beta=0.35)
    assert float(out.kl_loss) == 0.0 and torch.isnan(out.kl)
    assert torch.equal(out.loss, out.sft_loss)


def test_beta_zero_keeps_an_infinite_kl_out_of_the_loss():
    """At beta = 0 the KL is only logged: an infinite KL (the policy gives a token the
    reference likes zero probability) must not turn the loss into 0 * inf = NaN."""
    labels = torch.tensor([[IGNORE_INDEX, 3, 4]])
    logits = torch.zeros(1, 3, 8)
    logits[..., 5] = -float("inf")  # the policy never picks token 5
    ref_logits = torch.zeros(1, 3, 8)
    out = superhf_loss(logits, labels, ref_logits, beta=0.0)
    assert torch.isinf(out.kl)
    assert torch.isfinite(out.loss) and out.kl_loss.item() == 0.0


# --- per-example weights (issue 17's options) -----------------------------------------------


def _paper_loss(logits, labels, ref_logits, beta):
    """superhf_loss as it was before the weights (frozen here): the options-off reference."""
    import torch.nn.functional as F

    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    sft = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
    logp = F.log_softmax(logits[mask], dim=-1)
    ref_logp = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    per_token = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    owner = torch.arange(mask.shape[0])[:, None].expand_as(mask)[mask]
    per_example = torch.zeros(mask.shape[0]).index_add(0, owner, per_token) / mask.sum(-1)
    return sft + beta * per_example.sum(), sft, per_example.mean()


def _fixed_batch(tokenizer):
    batch = build_training_batch(PROMPTS, COMPLETIONS, tokenizer)
    torch.manual_seed(3)
    logits = torch.randn(*batch.labels.shape, len(tokenizer))
    ref_logits = logits + 0.3 * torch.randn_like(logits)
    return batch.labels, logits, ref_logits


def test_without_weights_the_loss_is_the_papers_bit_for_bit(tokenizer):
    labels, logits, ref_logits = _fixed_batch(tokenizer)
    out = superhf_loss(logits, labels, ref_logits, beta=0.35)
    loss, sft, kl = _paper_loss(logits, labels, ref_logits, 0.35)
    assert torch.equal(out.loss, loss) and torch.equal(out.sft_loss, sft)
    assert torch.equal(out.kl, kl) and float(out.unlikelihood_loss) == 0.0
    # unit weights give the same numbers (another summation order: close, not identical)
    ones = superhf_loss(logits, labels, ref_logits, beta=0.35, weights=torch.ones(2))
    torch.testing.assert_close(ones.loss, loss)
    torch.testing.assert_close(ones.kl, kl)


def test_weights_scale_each_examples_cross_entropy(tokenizer):
    labels, logits, _ = _fixed_batch(tokenizer)
    n = [len(c) for c in COMPLETIONS]  # 5 and 1 labelled tokens
    per_example = [
        float(superhf_loss(logits[i : i + 1], labels[i : i + 1], None, 0.0).sft_loss)
        for i in range(2)
    ]
    out = superhf_loss(logits, labels, None, 0.0, weights=torch.tensor([1.5, 0.5]))
    expected = (1.5 * per_example[0] * n[0] + 0.5 * per_example[1] * n[1]) / sum(n)
    assert float(out.sft_loss) == pytest.approx(expected, rel=1e-5)
    # weight 0: not trained on (no gradient at its positions), and not in the KL
    logits.requires_grad_(True)
    ref = logits.detach() + 1.0 * torch.randn_like(logits)
    out = superhf_loss(logits, labels, ref, 0.35, weights=torch.tensor([1.0, 0.0]))
    out.loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    only_first = superhf_loss(logits[:1], labels[:1], ref[:1], 0.35)
    torch.testing.assert_close(out.kl, only_first.kl)


def test_negative_weight_is_a_bounded_unlikelihood(tokenizer):
    labels, logits, ref_logits = _fixed_batch(tokenizer)
    logits.requires_grad_(True)
    out = superhf_loss(logits, labels, ref_logits, 0.35, weights=torch.tensor([1.0, -0.5]))
    # -log(1 - p(token)) at the one position predicting the negative example's token
    position = int((labels[1] != IGNORE_INDEX).nonzero()[0]) - 1
    p = torch.softmax(logits[1, position].detach().double(), -1)[labels[1, position + 1]]
    assert float(out.unlikelihood_loss.detach()) == pytest.approx(
        0.5 * float(-torch.log1p(-p)), rel=1e-4
    )
    torch.testing.assert_close(out.loss, out.sft_loss + out.unlikelihood_loss + out.kl_loss)
    # the KL covers the positive example only
    torch.testing.assert_close(
        out.kl, superhf_loss(logits[:1], labels[:1], ref_logits[:1], 0.35).kl
    )
    # a step down the gradient makes the negative token less likely
    out.unlikelihood_loss.backward()
    lower = logits[1, position].detach() - 10 * logits.grad[1, position]
    assert torch.softmax(lower, -1)[labels[1, position + 1]] < p
    # bounded: even at p(token) ~ 1 the loss is finite and the gradient's norm at most 2
    sure = torch.zeros(1, 2, 8)
    sure[0, 0, 3] = 40.0
    sure.requires_grad_(True)
    out = superhf_loss(
        sure, torch.tensor([[IGNORE_INDEX, 3]]), None, 0.0, weights=torch.tensor([-1.0])
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and float(out.loss) > 30
    assert float(sure.grad.norm()) <= 2.0
    # and accurate at p = 0.9 (the other branch): -log(0.1)
    nine = torch.zeros(1, 2, 2)
    nine[0, 0, 1] = math.log(9.0)
    out = superhf_loss(
        nine, torch.tensor([[IGNORE_INDEX, 1]]), None, 0.0, weights=torch.tensor([-1.0])
    )
    assert float(out.loss) == pytest.approx(-math.log(0.1), rel=1e-5)
