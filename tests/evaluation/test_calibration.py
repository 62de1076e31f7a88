"""MMLU calibration: the metrics by hand, the schema checks, the prompt, a tiny model end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from superhf.data import DatasetError
from superhf.evaluation import calibration as cal
from tests.conftest import make_tiny_llama

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _q(text: str, answer: int = 0, subject: str | None = "astronomy") -> dict:
    return {
        "question": text,
        "choices": [f"{text} one", f"{text} two", f"{text} three", f"{text} four"],
        "answer": answer,
        "subject": subject,
    }


def _write_jsonl(path, rows) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


# --- metrics -----------------------------------------------------------------------------


def test_mse_and_ece_by_hand():
    conf = [0.95, 0.92, 0.35, 0.31, 0.33]
    correct = [True, False, True, False, False]
    # Bin 0.9-1.0: accuracy 1/2, centre 0.95, mean confidence 0.935 (2 questions).
    # Bin 0.3-0.4: accuracy 1/3, centre 0.35, mean confidence 0.33 (3 questions).
    mse = ((0.5 - 0.95) ** 2 + (1 / 3 - 0.35) ** 2) / 2
    ece = 2 / 5 * abs(0.5 - 0.935) + 3 / 5 * abs(1 / 3 - 0.33)
    assert cal.calibration_mse(conf, correct) == pytest.approx(mse)
    assert cal.expected_calibration_error(conf, correct) == pytest.approx(ece)
    bins = cal.calibration_bins(conf, correct)
    assert [b["count"] for b in bins] == [0, 0, 0, 3, 0, 0, 0, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[0]["accuracy"] is None


def test_mse_counts_each_non_empty_bin_once_whatever_its_size():
    # 99 questions in bin 0.9-1.0, all right; 1 in bin 0.2-0.3, right.
    conf = [0.99] * 99 + [0.25]
    correct = [True] * 100
    assert cal.calibration_mse(conf, correct) == pytest.approx(
        ((1 - 0.95) ** 2 + (1 - 0.25) ** 2) / 2
    )
    # ECE weighs by size: the lone question matters 1/100.
    assert cal.expected_calibration_error(conf, correct) == pytest.approx(0.99 * 0.01 + 0.01 * 0.75)


def test_edges_go_to_the_upper_bin_and_one_to_the_last():
    bins = cal.calibration_bins([0.3, 0.7, 1.0, 0.0], [True, True, True, False])
    assert bins[3]["count"] == 1 and bins[7]["count"] == 1
    assert bins[9]["count"] == 1 and bins[0]["count"] == 1


def test_perfect_calibration_gives_zero():
    conf, correct = [], []
    for b in range(2, 10):
        centre = (b + 0.5) / 10
        n_right = round(centre * 200)
        conf += [centre] * 200
        correct += [True] * n_right + [False] * (200 - n_right)
    assert cal.calibration_mse(conf, correct) == pytest.approx(0, abs=1e-12)
    assert cal.expected_calibration_error(conf, correct) == pytest.approx(0, abs=1e-12)

    rng = np.random.default_rng(0)  # sampled: correct with probability = confidence
    conf = rng.uniform(0.25, 1.0, 200_000)
    correct = rng.uniform(size=conf.size) < conf
    assert cal.calibration_mse(conf, correct) < 1e-4
    assert cal.expected_calibration_error(conf, correct) < 0.01
    overconfident = rng.uniform(size=conf.size) < conf - 0.2
    assert cal.expected_calibration_error(conf, overconfident) > 0.15


def test_result_from_probabilities():
    probs = [[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.4, 0.1]]
    result = cal.result_from_probabilities(probs, [0, 2, 2], num_skipped=4, label="m")
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.num_questions == 3 and result.num_skipped == 4
    data = result.to_dict()
    assert "probabilities" not in data and data["label"] == "m"
    json.dumps(data, allow_nan=False)


# --- questions ---------------------------------------------------------------------------


def test_bad_rows_are_skipped_and_counted_letters_accepted(tmp_path):
    rows = [
        _q("good int", 2),
        {**_q("good letter"), "answer": "C"},
        {"choices": ["a", "b", "c", "d"], "answer": 0},  # no question
        {**_q("three choices"), "choices": ["a", "b", "c"]},
        {**_q("out of range"), "answer": 5},
        {**_q("bad letter"), "answer": "E"},
        {**_q("bool answer"), "answer": True},
    ]
    path = _write_jsonl(tmp_path / "q.jsonl", rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    loaded = cal.load_questions(path)
    assert [q.answer for q in loaded.questions] == [2, 2]
    assert loaded.num_skipped == 6
    assert loaded.first_problem.startswith("row 3: `question`")


def test_no_usable_row_names_the_file_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{**_q("x"), "answer": 9}])
    with pytest.raises(DatasetError, match=r"bad\.jsonl.*`answer`"):
        cal.load_questions(path)
    with pytest.raises(DatasetError, match="no such file"):
        cal.load_questions(str(tmp_path / "missing.jsonl"))


def test_csv_with_letter_columns(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("question,A,B,C,D,answer\nWhat?,w,x,y,z,B\n", encoding="utf-8")
    loaded = cal.load_questions(str(path))
    assert loaded.questions[0].choices == ("w", "x", "y", "z")
    assert loaded.questions[0].answer == 1


# --- prompts -----------------------------------------------------------------------------


def test_prompt_has_the_shots_and_never_the_question_itself():
    pool = [cal.parse_question(_q(f"shot {i}", i % 4)) for i in range(8)]
    pool.append(cal.parse_question(_q("other subject", 1, subject="law")))
    question = pool[3]
    shots = cal.select_shots(question, pool, 5)
    assert len(shots) == 5 and question not in shots
    assert all(s.subject == "astronomy" for s in shots)  # same subject first
    prompt = cal.build_prompt(question, shots)
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about astronomy.\n\n"
    )
    assert prompt.count("Answer:") == 6 and prompt.endswith("shot 3 four\nAnswer:")
    assert prompt.count("shot 3\n") == 1  # the question appears once: as the question
    assert (
        "shot 0\nA. shot 0 one\nB. shot 0 two\nC. shot 0 three\nD. shot 0 four\nAnswer: A\n\n"
        in (prompt)
    )
    assert len(cal.select_shots(question, pool, 50)) == 8  # all but itself
    assert cal.select_shots(question, pool, 0) == []
    assert "law" not in cal.build_prompt(question, cal.select_shots(question, pool, 7))


def test_letter_tokens_with_the_real_tokenizer(tokenizer):
    ids = cal.letter_token_ids(tokenizer)
    assert ids == [tokenizer.encode(f" {x}", add_special_tokens=False)[0] for x in "ABCD"]
    assert [tokenizer.decode([i]) for i in ids] == [" A", " B", " C", " D"]


# --- a tiny random model, end to end -------------------------------------------------------


@pytest.fixture(scope="module")
def question_file(tmp_path_factory):
    rows = [_q(f"Question number {i} about stars?", i % 4) for i in range(7)]
    rows.append({**_q("Which letter?"), "answer": "D"})
    rows.append({"question": "broken", "choices": "abcd", "answer": 0})
    return _write_jsonl(tmp_path_factory.mktemp("mmlu") / "mmlu.jsonl", rows)


def test_end_to_end_on_a_tiny_model(tokenizer, question_file, tmp_path):
    model = make_tiny_llama(len(tokenizer))
    questions = cal.load_questions(question_file)
    result = cal.evaluate_calibration(
        model, tokenizer, questions, None, num_fewshot=2, batch_size=3, progress=False
    )
    probs = np.array(result.probabilities)
    assert probs.shape == (8, 4)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert 0 <= result.accuracy <= 1 and result.num_skipped == 1
    assert sum(b["count"] for b in result.bins) == 8 * 4  # every choice of every question
    assert sum(b["count"] for b in result.top1_bins) == 8
    assert not math.isnan(result.calibration_mse) and 0 <= result.top1_ece <= 1
    # A question's probabilities do not depend on its batch mates (left padding is exact).
    alone = cal.evaluate_calibration(
        model, tokenizer, questions, None, num_fewshot=2, batch_size=1, progress=False
    )
    assert np.allclose(alone.probabilities, result.probabilities, atol=1e-5)

    other = cal.result_from_probabilities(np.full((8, 4), 0.25), [0] * 8, label="uniform")
    for path in (tmp_path / "one.png", tmp_path / "two.png"):
        cal.reliability_diagram(result if path.stem == "one" else [result, other], path)
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000


def test_cli_calibrate_writes_json_and_png(tiny_model_dir, question_file, tmp_path):
    from superhf.cli import app

    out = tmp_path / "out"
    args = ["calibrate", str(tiny_model_dir), "--dataset", question_file, "--num_fewshot", "1"]
    result = CliRunner().invoke(app, [*args, "--output_dir", str(out), "--batch_size", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "calibration.json").read_text())
    assert data["num_fewshot"] == 1 and len(data["models"]) == 1
    assert data["models"][0]["num_questions"] == 8 and data["models"][0]["num_skipped"] == 1
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    assert "calibration MSE" in result.output


def test_cli_calibrate_bad_input_exits_2(tiny_model_dir, question_file, tmp_path):
    from superhf.cli import app

    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "choices": ["a"], "answer": 0}])
    result = CliRunner().invoke(app, ["calibrate", str(tiny_model_dir), "--dataset", bad])
    assert result.exit_code == 2
    assert "bad.jsonl" in result.output and "`choices`" in result.output
    assert "Traceback" not in result.output
    nope = str(tmp_path / "nope")
    result = CliRunner().invoke(app, ["calibrate", nope, "--dataset", question_file])
    assert result.exit_code == 2 and "no such folder" in result.output
    result = CliRunner().invoke(
        app, ["calibrate", nope, "--dataset", question_file, "--limit", "0"]
    )
    assert result.exit_code == 2 and "limit must be >= 1" in result.output


# --- the paper's metric bins all four choices ----------------------------------------------


def test_paper_mse_bins_all_four_choices_by_hand():
    # Two questions, answers A and B. The 8 choice probabilities, (value, is the answer):
    #   q1: 0.55 hit, 0.25, 0.15, 0.05      q2: 0.65, 0.05 hit, 0.15, 0.15
    probs = [[0.55, 0.25, 0.15, 0.05], [0.65, 0.05, 0.15, 0.15]]
    answers = [0, 1]
    # Bins: 0.0-0.1 {0.05, 0.05 hit} acc 1/2; 0.1-0.2 {0.15 x3} acc 0; 0.2-0.3 {0.25} acc 0;
    # 0.5-0.6 {0.55 hit} acc 1; 0.6-0.7 {0.65} acc 0.
    paper = ((0.5 - 0.05) ** 2 + 0.15**2 + 0.25**2 + (1 - 0.55) ** 2 + 0.65**2) / 5
    assert cal.all_choices_calibration_mse(probs, answers) == pytest.approx(paper)
    bins = cal.all_choices_bins(probs, answers)
    assert [b["count"] for b in bins] == [2, 3, 1, 0, 0, 1, 1, 0, 0, 0]
    # Top-1 only: q1 conf 0.55 right (bin 0.5-0.6), q2 conf 0.65 wrong (bin 0.6-0.7).
    top1 = ((1 - 0.55) ** 2 + (0 - 0.65) ** 2) / 2
    assert cal.calibration_mse([0.55, 0.65], [True, False]) == pytest.approx(top1)
    assert paper != pytest.approx(top1)

    result = cal.result_from_probabilities(probs, answers)
    assert result.calibration_mse == pytest.approx(paper)  # the headline is the paper's
    assert result.top1_calibration_mse == pytest.approx(top1)
    assert result.top1_ece == pytest.approx(0.5 * abs(1 - 0.55) + 0.5 * abs(0 - 0.65))
    assert [b["count"] for b in result.bins] == [2, 3, 1, 0, 0, 1, 1, 0, 0, 0]
    assert sum(b["count"] for b in result.top1_bins) == 2
    data = result.to_dict()
    assert data["calibration_mse"] == pytest.approx(paper)
    assert data["top1_ece"] == pytest.approx(result.top1_ece)
    assert data["ece"] == data["top1_ece"]  # the old name, kept as an alias
    assert data["top1_calibration_mse"] == pytest.approx(top1)


def test_paper_mse_is_zero_for_calibrated_probabilities_over_all_choices():
    # Each question: the answer gets p, three wrong choices share 1 - p. Across many
    # questions with p's hit rate equal to p, every choice probability is calibrated.
    rng = np.random.default_rng(0)
    n = 40_000
    weights = rng.dirichlet(np.ones(4), size=n)
    answers = np.array([rng.choice(4, p=w) for w in weights])
    assert cal.all_choices_calibration_mse(weights, answers) < 2e-4
    # The lowest bins are used (top-1 confidence is never below 0.25, so top-1 never is).
    assert cal.all_choices_bins(weights, answers)[0]["count"] > 0
    assert cal.calibration_bins(weights.max(axis=1), weights.argmax(1) == answers)[0]["count"] == 0
