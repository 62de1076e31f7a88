"""Issue 17's options end to end: the real `superhf train` on the tiny model, and what the
loss was given for each option (the rows of every training batch and their weights), checked
against the sampled completions and their rewards computed here independently.
"""

from __future__ import annotations

import collections
import json
import statistics

import pytest
import torch
from typer.testing import CliRunner

import superhf.train.trainer
import superhf.train.update
from superhf.batching import build_training_batch, encode_prompt
from superhf.generation import Completion
from superhf.train.loss import superhf_loss
from tests.train.test_training_tokens import ROWS, Spy, _trained_rows, _trainer


def char_length(prompts, completions, **kw):
    """Few ties, and a function of the text alone: the test recomputes it."""
    return [float(len(c)) for c in completions]


def constant_reward(prompts, completions, **kw):
    return [1.0 for _ in completions]


def _expected(completions: list[Completion], option: str):
    """(prompt index, completion ids, weight) the loss should see in one pass, as a multiset;
    written out from the option's definition, not with select_training_samples."""
    by_prompt = collections.defaultdict(list)
    for c in completions:
        by_prompt[c.prompt_index].append(c)
    rows = []
    for p, own in by_prompt.items():
        scores = [float(len(c.text)) for c in own]
        ranked = sorted(range(len(own)), key=lambda j: (-scores[j], j))
        if option == "top_k":
            rows += [(p, own[j], None) for j in ranked[:3]]
        elif option == "epochs":
            rows += [(p, own[ranked[0]], None)]
        elif option == "negatives":
            worst = min(range(len(own)), key=lambda j: (scores[j], j))
            rows += [(p, own[ranked[0]], 1.0)]
            if scores[worst] < scores[ranked[0]]:
                rows += [(p, own[worst], -0.5)]
        elif option == "advantage":
            mean, std = statistics.fmean(scores), statistics.stdev(scores)
            rows += [
                (p, c, (r - mean) / (std + 1e-4))
                for c, r in zip(own, scores, strict=True)
                if r > mean + 1e-9
            ]
    if option == "advantage":
        mean_weight = statistics.fmean([w for _, _, w in rows])
        rows = [(p, c, w / mean_weight) for p, c, w in rows]
    return rows


@pytest.mark.parametrize(
    "option, flags",
    [
        ("top_k", ["--num_kept_per_prompt", "3"]),
        ("epochs", ["--num_train_epochs", "2"]),
        ("advantage", ["--sample_weighting", "advantage", "--num_kept_per_prompt", "4"]),
        ("negatives", ["--negative_weight", "0.5"]),
        ("skip_uniform", ["--skip_uniform_prompts", "true"]),
    ],
)
def test_superhf_train_trains_on_what_each_option_selects(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, option, flags
):
    from superhf.cli import app

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    sampled = Spy(superhf.train.trainer.generate_completions)
    batches = Spy(build_training_batch)
    losses = Spy(superhf_loss)
    monkeypatch.setattr(superhf.train.trainer, "generate_completions", sampled)
    monkeypatch.setattr(superhf.train.update, "build_training_batch", batches)
    monkeypatch.setattr(superhf.train.update, "superhf_loss", losses)
    reward = "constant_reward" if option == "skip_uniform" else "char_length"
    args = [
        "train",
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(data),
        "--reward_funcs", f"tests.train.test_options:{reward}",
        "--num_generations", "4",
        "--max_completion_length", "6",
        "--top_k", "3",
        "--stop_sequences", "\n\nHuman:",
        "--prompts_per_iteration", "4",
        "--max_iterations", "1",
        "--per_device_train_batch_size", "2",
        "--num_eval_prompts", "0",
        "--output_dir", str(tmp_path / "run"),
        *flags,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (metrics,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    ((sample_args, _, (completions, _)),) = sampled.calls
    texts = sample_args[2]
    _trained_rows(batches)  # each batch holds exactly its rows' prompt + completion ids
    trained = []  # (prompt ids, completion ids, the weight the loss was given)
    for (rows, _, _), (loss_args, _, _) in zip(batches.calls, losses.calls, strict=True):
        weights = loss_args[4] if len(loss_args) > 4 else None
        for i, (p, c) in enumerate(zip(*rows[:2], strict=True)):
            trained.append((p, c, None if weights is None else float(weights[i])))
    if option == "skip_uniform":  # every sample scores the same: no prompt is trained on
        assert trained == [] and metrics["num_skipped_prompts"] == 4
        return
    assert metrics["num_skipped_prompts"] == 0
    expected = [
        (encode_prompt(tokenizer, texts[p]), c.training_ids(tokenizer), w)
        for p, c, w in _expected(completions, option)
    ]
    passes = 2 if option == "epochs" else 1
    assert len(trained) == passes * len(expected)
    for k in range(passes):  # each pass trains on exactly the selected rows
        got = trained[k * len(expected) : (k + 1) * len(expected)]
        assert _multiset(got) == _multiset(expected), option
    if option == "negatives":
        assert metrics["num_negatives"] == sum(w < 0 for _, _, w in expected) > 0
        assert metrics["loss/unlikelihood"] > 0
    if option == "advantage":
        assert sum(w for _, _, w in trained) == pytest.approx(len(trained))  # mean weight 1


def _multiset(rows):
    return sorted((tuple(p), tuple(c), None if w is None else round(w, 5)) for p, c, w in rows)


# --- the trainer's side: passes and micro-batches --------------------------------------------


def _completions(tokenizer, n: int) -> list[Completion]:
    eos = tokenizer.eos_token_id
    words = tokenizer("one two three four five six seven", add_special_tokens=False)["input_ids"]
    return [
        Completion(i % 2, f"s{i}", i + 2, False, token_ids=[*words[: i + 1], eos]) for i in range(n)
    ]


def test_later_passes_shuffle_the_samples_with_their_own_seed(tmp_path, tokenizer, monkeypatch):
    trainer = _trainer(tmp_path, tokenizer, num_train_epochs=3, per_device_train_batch_size=2)
    samples = _completions(tokenizer, 6)
    orders = []
    for seed in ("66:1", "66:1", "66:2"):
        spy = Spy(build_training_batch)
        monkeypatch.setattr(superhf.train.update, "build_training_batch", spy)
        state = torch.random.get_rng_state()
        trainer.fine_tune(samples, trainer.prompts[:2], shuffle_seed=seed)
        assert torch.equal(torch.random.get_rng_state(), state)  # the run's stream untouched
        orders.append([c for _, c in _trained_rows(spy)])
    ids = [s.training_ids(tokenizer) for s in samples]
    for order in orders:
        assert order[:6] == ids  # the first pass: the filter's order
        assert sorted(order[6:12]) == sorted(order[12:]) == sorted(ids)
    assert orders[0] == orders[1] and orders[0][6:] != orders[2][6:]
    assert orders[0][6:12] != ids or orders[0][12:] != ids  # shuffled, not repeated


def test_micro_batches_give_the_whole_minibatchs_gradient_with_weights(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, beta=0.3)
    prompt = encode_prompt(tokenizer, trainer.prompts[0].text)
    rows = [(prompt, c.training_ids(tokenizer)) for c in _completions(tokenizer, 6)]
    weights = [1.5, -0.5, 0.5, 1.0, -0.5, 1.0]
    minibatches = [
        [(p, c, w) for (p, c), w in zip(rows[i : i + 3], weights[i : i + 3], strict=True)]
        for i in (0, 3)
    ]
    count = superhf.train.update.token_counts
    group = [(mb, count(mb), len(mb)) for mb in minibatches]  # as Processes.minibatches does
    grads = []
    trainer.optimizer.step = lambda *a, **k: grads.append(
        [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    )
    whole, _ = trainer.update.optimizer_step(group, micro=3)
    split, _ = trainer.update.optimizer_step(group, micro=1)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for s, t in zip(whole, split, strict=True):
        assert s["loss/unlikelihood"] > 0
        for key in s:
            assert s[key] == pytest.approx(t[key], rel=1e-4), key
