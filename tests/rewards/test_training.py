"""Reward-model training: splits, pair loading, batch-independent scores, learning, saving."""

from __future__ import annotations

import json

import pytest
import torch

from superhf.config import ConfigError
from superhf.data import DatasetError
from superhf.rewards.training import (
    EMBEDDED_MINILM,
    RewardTrainingConfig,
    bradley_terry_loss,
    load_pairs,
    load_reward_backbone,
    score_texts,
    split_rows,
    train_reward_model,
)


def test_splits_are_disjoint_deterministic_and_complementary():
    first, held = split_rows(11, "first-half")
    second, held2 = split_rows(11, "second-half")
    assert list(first) == list(held2) == list(range(5))
    assert list(second) == list(held) == list(range(5, 11))
    train, rest = split_rows(10, "train:0.9")
    assert list(train) == list(range(9)) and list(rest) == [9]
    for bad in ("half", "train:0", "train:x", "train:1.5"):
        with pytest.raises(ConfigError, match="split must be"):
            RewardTrainingConfig(split=bad)


def test_bradley_terry_loss():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.tensor(0.5))) / 2
    assert float(bradley_terry_loss(c, r)) == pytest.approx(float(expected))
    assert float(bradley_terry_loss(c, r, margin=1.0)) > float(bradley_terry_loss(c, r))


def test_pairs_from_hh_and_trl_rows_bad_rows_counted(tokenizer):
    rows = [
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: hello",
            "rejected": "\n\nHuman: hi\n\nAssistant: go",
        },
        {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"},
        {
            "prompt": [{"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
        {"chosen": "same", "rejected": "same"},
        {"chosen": "", "rejected": "x"},
        {"chosen": "only chosen"},
        {"chosen": "long " * 600, "rejected": "short"},
    ]
    pairs, stats = load_pairs(rows, tokenizer, max_length=256, source="rows")
    assert len(pairs) == 3
    assert pairs[1] == ("Q: 2+2? 4", "Q: 2+2? 5")
    assert "Hello!" in pairs[2][0] and "<|im_start|>user" in pairs[2][0]
    assert (stats.num_identical, stats.num_empty, stats.num_missing, stats.num_too_long) == (
        1,
        1,
        1,
        1,
    )


def test_nothing_usable_names_row_and_column(tokenizer):
    with pytest.raises(DatasetError, match=r"prefs.jsonl: no usable.*row 0, column 'rejected'"):
        load_pairs([{"chosen": "a"}], tokenizer, 256, source="prefs.jsonl")


@pytest.mark.parametrize("backbone", [EMBEDDED_MINILM, "tiny-llama"])
def test_scores_do_not_depend_on_batch_mates(backbone, tiny_model_dir):
    name = str(tiny_model_dir) if backbone == "tiny-llama" else backbone
    model, tokenizer = load_reward_backbone(RewardTrainingConfig(model_name_or_path=name))
    model.eval()
    texts = ["short", "a much longer text with many more tokens than the first one", "mid one"]
    with torch.no_grad():
        together = score_texts(model, tokenizer, texts, 128)
        alone = torch.cat([score_texts(model, tokenizer, [t], 128) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def _toy_pairs(n: int) -> list[dict[str, str]]:
    topics = [
        "the weather",
        "my garden",
        "a recipe",
        "the train",
        "a song",
        "my homework",
        "the museum",
        "a movie",
    ]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        rows.append(
            {
                "prompt": f"\n\nHuman: Can you tell me about {topic}?\n\nAssistant:",
                "chosen": f" Sure, happy to help with {topic}. Here is what I know.",
                "rejected": f" No. {topic} is stupid and so are you, idiot.",
            }
        )
    return rows


def test_training_learns_and_saves_a_standard_folder(tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _toy_pairs(48)))
    config = RewardTrainingConfig(
        dataset_name=str(data),
        split="train:0.75",
        max_length=64,
        num_train_epochs=2,
        learning_rate=1e-4,
        output_dir=str(tmp_path / "rm"),
        logging_steps=2,
    )
    final = train_reward_model(config)
    assert final["eval_accuracy"] >= 0.9 and final["num_eval_pairs"] == 12
    lines = [json.loads(x) for x in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines if "eval_accuracy" in m] == [1, 2]

    from transformers import AutoModelForSequenceClassification

    from superhf.rewards.scoring import load_reward_func

    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").num_labels == 1
    rm = load_reward_func(str(tmp_path / "rm"))
    good, bad = rm(
        ["\n\nHuman: Tell me about cats?\n\nAssistant:"] * 2,
        [" Sure, happy to help with cats.", " Cats are stupid, idiot."],
    )
    assert good > bad


def test_lora_reward_model_is_saved_merged(tmp_path, tiny_model_dir):
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _toy_pairs(8)))
    config = RewardTrainingConfig(
        model_name_or_path=str(tiny_model_dir),
        use_peft=True,
        dataset_name=str(data),
        split="all",
        max_length=64,
        output_dir=str(tmp_path / "rm"),
    )
    train_reward_model(config)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_length_grouped_order_is_a_permutation_of_similar_length_batches():
    import random

    from superhf.rewards.training import length_grouped_order

    pairs = [("x" * n, "y") for n in random.Random(0).sample(range(1, 1000), 400)]
    order = length_grouped_order(pairs, 4, random.Random(1))
    assert sorted(order) == list(range(400))
    spreads = [
        max(len(pairs[i][0]) for i in order[k : k + 4])
        - min(len(pairs[i][0]) for i in order[k : k + 4])
        for k in range(0, 400, 4)
    ]
    assert sum(spreads) / len(spreads) < 100  # random batches would spread ~500
