"""report.html from a real short run, opened in headless Chromium: plots, answers, filters.

Chromium comes from the system's packages (`make setup` installs Debian's `chromium` where
apt-get works); without it the browser tests skip and say so. `--dump-dom` gives the page
after its script ran; the view is set through the URL hash, as a user's link would.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import time
import tomllib
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pytest

from superhf.config import SuperHFConfig
from superhf.evaluation.report import build_report
from superhf.evaluation.report_html import TEMPLATE, compact, embed_json, prompt_text
from superhf.train.trainer import SuperHFTrainer
from tests.evaluation.test_report import PNG_MAGIC, write_run

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(40)]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def length(prompts, completions, **kw):
    return [len(c) / 40 for c in completions]


def vowels(prompts, completions, **kw):
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def short_answers(prompts, completions, **kw):  # the test reward: the opposite of `length`
    return [-len(c) / 40 for c in completions]


def find_chromium() -> str | None:
    """$SUPERHF_CHROMIUM, or Chromium / Chrome on the PATH."""
    names = [os.environ.get("SUPERHF_CHROMIUM", ""), "chromium", "chromium-browser"]
    return next((shutil.which(n) for n in [*names, "google-chrome"] if n and shutil.which(n)), None)


needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium: install Debian's `chromium` (make setup does where apt-get works) or "
    "set SUPERHF_CHROMIUM to a Chromium binary",
)


def chromium(url: str, profile: Path, *args: str) -> str:
    """Open `url` headless in a fresh profile; stdout (the DOM with --dump-dom)."""
    result = subprocess.run(
        [find_chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Page(HTMLParser):
    """The dumped DOM's parts a test reads: images, sample rows, held-out rows, cell texts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.samples: list[dict] = []  # {"attrs": ..., "cells": {class: text}}
        self.heldout: list[dict] = []
        self.ids: dict[str, str] = {}
        self._row: dict | None = None
        self._cell: list | None = None
        self._id: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "tr" and attrs.get("class", "").split()[:1] in (["sample"], ["heldout"]):
            self._row = {"attrs": attrs, "cells": []}
            (self.samples if "sample" in attrs["class"] else self.heldout).append(self._row)
        if tag == "td" and self._row is not None:
            self._cell = [attrs.get("class", ""), ""]
            self._row["cells"].append(self._cell)
        if attrs.get("id") in ("sample-count", "heldout-count"):
            self._id = attrs["id"]
            self.ids[self._id] = ""

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if tag == "span":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None and self._row is not None:
            self._cell[1] += data
        if self._id:
            self.ids[self._id] += data

    def cells(self, row: dict, css: str) -> list[str]:
        return [" ".join(t.split()) for c, t in row["cells"] if css in c.split()]


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, tiny_model_dir) -> Path:
    """Two iterations of the tiny model, two reward functions, a test reward, evaluated at the
    start and the end."""
    folder = tmp_path_factory.mktemp("short-run") / "run"
    config = SuperHFConfig(
        model_name_or_path=str(tiny_model_dir),
        num_generations=4,
        max_completion_length=8,
        prompts_per_iteration=3,
        max_iterations=2,
        per_device_train_batch_size=4,
        top_k=20,
        num_eval_prompts=4,
        eval_steps=2,
        save_steps=10,
        seed=0,
        output_dir=str(folder),
    )
    SuperHFTrainer(
        reward_funcs=[length, vowels],
        test_reward_func=short_answers,
        args=config,
        train_dataset=PROMPTS,
    ).train()
    build_report([str(folder)])
    return folder


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _data(page: str) -> dict:
    start = page.index('<script type="application/json" id="report-data">')
    start = page.index(">", start) + 1
    return json.loads(page[start : page.index("</script>", start)])


# --- the file ---------------------------------------------------------------------------------


def test_report_html_is_one_self_contained_file(short_run):
    page = (short_run / "report.html").read_text()
    assert "{{" not in page  # every placeholder filled
    for outside in ("http://", "https://", "<link", "<script src", "@import", "url("):
        assert outside not in page, outside
    images = Page(page).images
    assert len(images) >= 6  # train and held-out reward, components, KL, METEOR, length, time
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    data = _data(page)["runs"][0]
    samples = _lines(short_run / "completions.jsonl")
    assert [r[2] for r in data["samples"]["rows"]] == [s["completion"] for s in samples]
    assert [r[5] for r in data["samples"]["rows"]] == [int(s["kept"]) for s in samples]
    assert data["samples"]["components"] == ["length", "vowels"]
    assert data["all_logged"] and len(samples) == 2 * 3 * 4
    answers = _lines(short_run / "eval_completions.jsonl")
    assert sorted({a["iteration"] for a in answers}) == [0, 2] and len(answers) == 2 * 4
    assert len(data["evals"]["rows"]) == 8
    assert [r[5] for r in data["evals"]["rows"]] == [round(a["test_reward"], 4) for a in answers]
    assert "Mean reward: first 1 iterations" in page  # the trainer's end-of-run line


def test_answers_cannot_break_out_of_the_page():
    hostile = '</script><script>alert("x")</script><!-- \u2028'
    rows = [
        {"iteration": 1, "prompt": "<b>hi</b>", "completion": hostile, "reward": 0.5, "kept": 1},
        {"iteration": 1, "prompt": "<b>hi</b>", "completion": "ok", "reward": float("nan")},
    ]
    text = embed_json(compact(rows))
    assert "<" not in text and "\u2028" not in text
    data = json.loads(text)
    assert data["prompts"] == ["<b>hi</b>"]  # each prompt once
    assert data["rows"][0][2] == hostile and data["rows"][1][3] is None
    assert data["rows"][1][5] == 1  # an old kept-only log: every row was kept


def test_conversation_prompts_read_as_lines():
    prompt = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert prompt_text(prompt) == "user: Hi\nassistant: Hello"
    assert prompt_text("\n\nHuman: Hi\n\nAssistant:") == "Human: Hi\n\nAssistant:"


def test_the_template_ships_in_the_wheel():
    assert "{{data}}" in (resources.files("superhf.evaluation") / TEMPLATE).read_text()
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert TEMPLATE in settings["package-data"]["superhf.evaluation"]


# --- in the browser ---------------------------------------------------------------------------


@needs_chromium
def test_browser_shows_the_plots_the_answers_and_the_held_out_comparison(short_run, tmp_path):
    page = Page(chromium((short_run / "report.html").as_uri(), tmp_path / "profile", "--dump-dom"))
    assert len([s for s in page.images if s.startswith("data:image/png")]) >= 6
    samples = _lines(short_run / "completions.jsonl")
    assert len(page.samples) == len(samples) == 24  # one page holds them all
    for row, sample in zip(page.samples, samples, strict=True):  # file order by default
        badge = "clipped" if sample["clipped"] else ""
        assert page.cells(row, "answer") == [words(sample["completion"] + badge)]
        assert row["attrs"]["data-kept"] == str(int(sample["kept"]))
        assert page.cells(row, "kept") == (["✓ kept"] if sample["kept"] else [""])
    assert page.ids["sample-count"] == "answers 1–24 of 24 (page 1 of 1)"
    # held-out: each prompt's answer at the start beside its answer at the last evaluation
    answers = {
        (a["iteration"], a["prompt_index"]): a for a in _lines(short_run / "eval_completions.jsonl")
    }
    assert len(page.heldout) == 4
    for row in page.heldout:
        index = int(row["attrs"]["data-prompt-index"])
        start, end = page.cells(row, "answer")
        assert start.startswith(words(answers[0, index]["completion"]))
        assert end.startswith(words(answers[2, index]["completion"]))
        assert f"reward {round(answers[2, index]['reward'], 4):+.3f}" in end


@needs_chromium
def test_filters_from_the_url_hash_change_what_is_shown(short_run, tmp_path):
    samples = _lines(short_run / "completions.jsonl")
    url = (short_run / "report.html").as_uri()

    def rows(view: str) -> list[dict]:
        return Page(chromium(f"{url}#{view}", tmp_path / view, "--dump-dom")).samples

    kept = rows("iteration=2&kept=1")
    expected = [s for s in samples if s["iteration"] == 2 and s["kept"]]
    assert len(kept) == len(expected) == 3 < len(samples)
    assert {(r["attrs"]["data-iteration"], r["attrs"]["data-kept"]) for r in kept} == {("2", "1")}
    by_reward = [float(r["attrs"]["data-reward"]) for r in rows("sort=reward-asc")]
    assert by_reward == sorted(by_reward) and len(by_reward) == len(samples)
    word = samples[5]["completion"].split()[0]
    found = rows("q=" + quote(word))
    assert found and all(word.lower() in json.dumps(r, ensure_ascii=False).lower() for r in found)


@needs_chromium
def test_screenshot_is_not_blank(short_run, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(
        (short_run / "report.html").as_uri(),
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 500, "a blank or nearly blank page"
    background = max(colors)[0] / (1280 * 2000)
    assert background < 0.8, f"{background:.0%} of the page is one colour"


@needs_chromium
def test_thousands_of_completions_render_fifty_at_a_time(tmp_path):
    run = write_run(tmp_path / "long", 0.35, iterations=100, eval_every=10)
    rng = random.Random(0)
    rows = [
        {
            "iteration": 1 + i // 64,
            "prompt_index": i // 8 % 8,
            "prompt": f"Prompt {i // 8}: " + "context " * 40,
            "completion": " ".join(rng.choice(["yes", "no", "maybe", "so"]) for _ in range(60)),
            "reward": rng.gauss(0, 1),
            "rewards/relevance": rng.random(),
            "kept": i % 8 == 0,
            "clipped": False,
        }
        for i in range(6400)
    ]
    (run / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_report([str(run)])
    page = run / "report.html"
    assert page.stat().st_size < 3_000_000  # prompts once, rows as arrays
    start = time.perf_counter()
    text = chromium(page.as_uri() + "#page=3", tmp_path / "profile", "--dump-dom")
    seconds = time.perf_counter() - start
    dom = Page(text)
    assert len(dom.samples) == 50
    assert dom.ids["sample-count"] == "answers 101–150 of 6400 (page 3 of 128)"
    assert seconds < 60, seconds
    assert "No eval_completions.jsonl" in text  # this run logged no held-out answers: said so
