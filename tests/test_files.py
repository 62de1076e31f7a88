"""One I/O layer: run-folder names, the JSON-lines reader, JSON-safe values, local paths."""

from __future__ import annotations

import json
import math
import threading

import pytest

from superhf.errors import DatasetError
from superhf.files import (
    CONFIG_FILE,
    EVAL_FILE,
    METRICS_FILE,
    is_local_path,
    json_safe,
    read_json_lines,
    read_text,
    write_text_atomic,
)


def test_strict_reader_names_the_setting_line_and_file():
    text = '{"a": 1}\n\n{"a": 2}\n{not json\n'
    with pytest.raises(DatasetError, match=r"^answers: line 4 of 'x.jsonl' is not valid JSON"):
        read_json_lines(text, "x.jsonl", "answers")
    with pytest.raises(DatasetError, match="line 2 of 'x.jsonl' is a JSON list"):
        read_json_lines('{"a": 1}\n[1, 2]\n', "x.jsonl", "answers")
    lines = read_json_lines('{"a": 1}\n\n{"a": 2}\n', "x.jsonl", "answers")
    assert [(line.number, line.value) for line in lines] == [(1, {"a": 1}), (3, {"a": 2})]


def test_lenient_reader_keeps_bad_lines_as_problems():
    lines = read_json_lines('{"a": 1}\n"text"\n{"iteration": 3, "rew', "m.jsonl", "RUN_DIR", True)
    assert [line.value for line in lines] == [{"a": 1}, None, None]
    assert "line 2 of 'm.jsonl' is a JSON str" in lines[1].problem
    assert "line 3 of 'm.jsonl' is not valid JSON" in lines[2].problem


def test_read_text_names_the_line_of_a_bad_byte(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"answers: line 2 of .* is not valid UTF-8"):
        read_text(path, "answers")


def test_json_safe_is_recursive():
    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": (2, "x"), "e": None}
    assert json_safe(value) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, "x"], "e": None}
    json.dumps(json_safe(value), allow_nan=False)


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("./model", True),
        ("/abs/model", True),
        ("~/model", True),
        ("data/questions.jsonl", True),
        ("data/q.json.gz", True),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),
        ("cais/mmlu", False),
    ],
)
def test_is_local_path(name, local):
    assert is_local_path(name) is local


def test_an_existing_folder_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    assert is_local_path("org/model")


def test_run_folder_names():
    assert (CONFIG_FILE, METRICS_FILE, EVAL_FILE) == ("config.yaml", "metrics.jsonl", "eval.json")


def test_judge_answers_with_a_bad_byte_name_the_line(tmp_path):
    """load_answer_files used to raise a bare UnicodeDecodeError (a traceback on the CLI)."""
    from superhf.evaluation.judge import load_answer_files

    good = tmp_path / "a.jsonl"
    good.write_text('{"prompt": "p", "completion": "c", "model": "a"}\n', encoding="utf-8")
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"prompt": "p", "completion": "caf\xe9", "model": "b"}\n')
    with pytest.raises(DatasetError, match="answers: line 1 of .*b.jsonl.* is not valid UTF-8"):
        load_answer_files([good, bad])


def test_writers_of_one_file_never_trip_on_each_others_temporary(tmp_path):
    """Comparisons sharing a folder write its data and records at once: every write lands whole
    (a shared temporary name made one writer's rename fail, or publish another's half file)."""
    path = tmp_path / "eval.jsonl"
    texts = [f"{i}\n" * 20_000 for i in range(8)]
    barrier = threading.Barrier(len(texts))
    errors: list[BaseException] = []

    def write(text: str) -> None:
        barrier.wait()
        try:
            for _ in range(20):
                write_text_atomic(path, text)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_text(encoding="utf-8") in texts
    assert [p.name for p in tmp_path.iterdir()] == ["eval.jsonl"]  # no temporary left behind
