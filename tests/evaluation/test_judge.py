"""The LLM judge: Elo, the both-orders rule, parsing, a real local HTTP endpoint, the key kept
secret, a local HF judge, and the command."""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from superhf.evaluation import judge as jm
from superhf.evaluation.judge import Game, JudgeReply
from tests.conftest import make_tiny_llama

KEY = "sk-test-Secret-7f3a9c"

# --- Elo and win rates ---------------------------------------------------------------------


def test_one_game_from_1500_with_k32():
    elo = jm.elo_ratings([Game("a", "b", 1.0)])
    assert elo == pytest.approx({"a": 1516.0, "b": 1484.0})
    assert jm.elo_ratings([Game("a", "b", 0.5)]) == pytest.approx({"a": 1500.0, "b": 1500.0})


def test_two_games_in_sequence_by_hand():
    # a beats b (1516/1484), then b beats a: E_b = 1 / (1 + 10^((1516-1484)/400)).
    e_b = 1 / (1 + 10 ** (32 / 400))
    elo = jm.elo_ratings([Game("a", "b", 1.0), Game("b", "a", 1.0)], num_orderings=0)
    assert elo["b"] == pytest.approx(1484 + 32 * (1 - e_b))
    assert elo["a"] == pytest.approx(1516 - 32 * (1 - e_b))


def test_symmetric_results_give_equal_ratings():
    games = [Game("a", "b", 1.0), Game("a", "b", 0.0)] * 10 + [Game("c", "a", 0.5)] * 4
    games += [Game("b", "c", 1.0), Game("c", "b", 1.0)] * 5
    elo = jm.elo_ratings(games, num_orderings=5000)  # equal in expectation: a few points' noise
    assert elo["a"] == pytest.approx(elo["b"], abs=2.0)
    assert elo["b"] == pytest.approx(elo["c"], abs=2.0)
    assert sum(elo.values()) == pytest.approx(4500)  # Elo is zero-sum


def test_the_model_that_always_wins_ends_highest():
    games = [Game("strong", "mid", 1.0), Game("strong", "weak", 1.0), Game("mid", "weak", 0.7)]
    games += [Game("weak", "mid", 0.0)]
    elo = jm.elo_ratings(games * 5)
    assert elo["strong"] > elo["mid"] > elo["weak"]


def test_averaging_over_orderings_does_not_depend_on_the_given_order():
    games = [Game("a", "b", 1.0)] * 3 + [Game("b", "c", 1.0)] * 2 + [Game("c", "a", 1.0)]
    one = jm.elo_ratings(games, seed=3)
    assert jm.elo_ratings(list(reversed(games)), seed=3) == one
    assert jm.elo_ratings(games[2:] + games[:2], seed=3) == one
    # Played once, the order matters: the averaging is what removes it.
    assert jm.elo_ratings(games, num_orderings=0) != jm.elo_ratings(games[::-1], num_orderings=0)


def test_win_rates_with_wilson_interval():
    games = [Game("a", "b", 1.0)] * 6 + [Game("b", "a", 1.0)] * 2 + [Game("a", "b", 0.5)] * 2
    (row,) = jm.win_rates(games)
    assert (row["model_1"], row["wins"], row["losses"], row["ties"]) == ("a", 6, 2, 2)
    assert row["win_rate"] == pytest.approx(0.7)
    assert row["ci_low"] < 0.7 < row["ci_high"]
    low, high = jm.wilson_interval(0, 10)  # Wilson: never a zero-width interval at 0
    assert low == 0.0 and 0.2 < high < 0.35
    wide = jm.wilson_interval(7, 10)
    narrow = jm.wilson_interval(700, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        ("b", "B"),
        (" B.\n", "B"),
        ("(A)", "A"),
        ("**B**", "B"),
        ("Response A", "A"),
        ("I prefer Response B.", "B"),
        ("Assistant A is better.", "A"),
        ("B is better", "B"),
        ("A: the first one", "A"),
        ("Both are fine", None),
        ("Tie", None),
        ("Response A is fine but Response B is better", None),
        ("I cannot decide", None),
        ("", None),
        ("Abstain", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert jm.parse_verdict(reply) == verdict


# --- the both-orders rule ------------------------------------------------------------------


class ScriptedJudge:
    name = "scripted"

    def __init__(self, decide):
        self.decide = decide
        self.calls = []

    def judge(self, prompt, answer_a, answer_b):
        self.calls.append((prompt, answer_a, answer_b))
        return JudgeReply(self.decide(prompt, answer_a, answer_b))


PROMPTS = ["How do I boil an egg?", "What is the capital of France?", "Name a prime number."]
ANSWERS = {
    "good": ["Boil it nine minutes.", "Paris.", "Seven is prime."],
    "bad": ["Eggs are bad.", "I don't know.", "Four."],
    "mid": ["Cook it.", "A city in France.", "Nine, maybe."],
}


def test_a_judge_that_always_says_a_gives_only_ties(tmp_path):
    result = jm.judge_pairs(ScriptedJudge(lambda *a: "A"), PROMPTS, ANSWERS, progress=False)
    assert all(g.score == 0.5 for g in result.games)
    assert len(result.games) == 3 * 3 and result.num_inconsistent == 9
    assert result.first_position_rate == 1.0
    assert set(result.elo.values()) == {1500.0}


def test_both_orders_agreeing_gives_a_win_and_the_log_is_exact(tmp_path):
    rank = {text: m for m, texts in ANSWERS.items() for text in texts}
    order = {"good": 0, "mid": 1, "bad": 2}

    def prefer_better(prompt, a, b):
        return "A" if order[rank[a]] < order[rank[b]] else "B"

    judge = ScriptedJudge(prefer_better)
    log = tmp_path / "judgements.jsonl"
    result = jm.judge_pairs(judge, PROMPTS, ANSWERS, log_path=log, seed=1, progress=False)
    assert result.elo["good"] > result.elo["mid"] > result.elo["bad"]
    assert result.num_inconsistent == 0 and result.num_invalid == 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == len(judge.calls) == 3 * 3 * 2
    # Each logged row is exactly a call the judge received, in the same order.
    assert [(r["prompt"], r["answer_a"], r["answer_b"]) for r in rows] == judge.calls
    for r in rows:
        assert ANSWERS[r["model_a"]][r["prompt_index"]] == r["answer_a"]
        assert r["preferred"] == {"A": r["model_a"], "B": r["model_b"]}[r["verdict"]]
    seen = {(r["prompt_index"], frozenset((r["model_a"], r["model_b"])), r["order"]) for r in rows}
    assert len(seen) == 18  # every pair, every prompt, both orders


def test_unparseable_reply_is_a_tie_and_counted():
    answers = {k: v[:1] for k, v in ANSWERS.items()}
    result = jm.judge_pairs(
        ScriptedJudge(lambda *a: "I refuse"), PROMPTS[:1], answers, progress=False
    )
    assert result.num_invalid == 6 and all(g.score == 0.5 for g in result.games)


# --- a real HTTP endpoint on 127.0.0.1 ------------------------------------------------------


class ChatServer:
    """A chat-completions server: checks the key and the body, prefers the answer with
    "Paris" in it, and can be told to fail first."""

    def __init__(self, fail_first=()):
        self.fail_first = list(fail_first)
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    given = self.headers.get("Authorization", "")
                    # Like real APIs, echo (part of) the key: the client must redact it.
                    return self._send(401, {"error": f"Incorrect API key provided: {given}"})
                if outer.fail_first:
                    return self._send(outer.fail_first.pop(0), {"error": "try again"})
                assert self.path == "/v1/chat/completions"
                assert body["temperature"] == 0 and body["max_tokens"] <= 16
                assert [m["role"] for m in body["messages"]] == ["system", "user"]
                user = body["messages"][1]["content"]
                a = re.search(r"\nA: (.*)\nB: ", user, re.S).group(1)
                content = "Response A" if "Paris" in a else "**B**"
                reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                return self._send(200, reply)

            def _send(self, status, data):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _judge(url, key=KEY, **kwargs):
    return jm.OpenAIChatJudge("judge-model", base_url=url, api_key=key, backoff=0.01, **kwargs)


def test_http_judge_end_to_end_and_the_key_stays_secret(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    answers = {"paris": ["Paris is the capital."], "other": ["Lyon, I think."]}
    with ChatServer(fail_first=[500, 429]) as server:
        judge = _judge(server.url)
        log = tmp_path / "judgements.jsonl"
        result = jm.judge_pairs(judge, ["Capital of France?"], answers, log, progress=False)
    assert result.win_rates[0]["model_1"] == "other" and result.win_rates[0]["losses"] == 1
    assert result.elo["paris"] > result.elo["other"]
    assert len(server.requests) == 4  # 500, 429 (retried), then the two orders
    path, headers, body = server.requests[-1]
    assert body["model"] == "judge-model" and headers["Authorization"] == f"Bearer {KEY}"
    assert "retry" in caplog.text  # the retries were logged ...
    assert KEY not in caplog.text and KEY not in repr(judge)  # ... without the key
    assert KEY not in log.read_text() and KEY not in json.dumps(result.to_dict())
    assert {json.loads(line)["raw"] for line in log.read_text().splitlines()} == {
        "Response A",
        "**B**",
    }


def test_http_401_is_a_clear_error_without_the_key():
    with ChatServer() as server:
        judge = _judge(server.url, key=KEY[::-1] + "-wrong" + KEY)
        with pytest.raises(jm.JudgeError, match="HTTP 401.*API key") as err:
            judge.judge("p", "a", "b")
    assert len(server.requests) == 1  # not retried
    assert KEY not in str(err.value) and KEY[::-1] not in str(err.value)
    assert "***" in str(err.value)


def test_http_gives_up_after_the_retries():
    with (
        ChatServer(fail_first=[503] * 10) as server,
        pytest.raises(jm.JudgeError, match="after 3 attempts.*HTTP 503"),
    ):
        _judge(server.url, max_retries=2).judge("p", "a", "b")
    assert len(server.requests) == 3
    unreachable = _judge("http://127.0.0.1:9", max_retries=1, timeout=2)
    with pytest.raises(jm.JudgeError, match="cannot reach"):
        unreachable.judge("p", "a", "b")


def test_key_and_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("SUPERHF_JUDGE_BASE_URL", "http://127.0.0.1:1/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    judge = jm.OpenAIChatJudge("m")
    assert judge.base_url == "http://127.0.0.1:1/v1"
    assert "api_key=set" in repr(judge) and KEY not in repr(judge)
    assert KEY not in json.dumps(judge.describe()) and KEY not in str(vars(judge))


# --- a local HF judge ------------------------------------------------------------------------


def test_local_hf_judge_runs_on_a_tiny_model(tokenizer, tmp_path):
    judge = jm.LocalHFJudge(make_tiny_llama(len(tokenizer)), tokenizer)
    result = jm.judge_pairs(
        judge, PROMPTS[:2], {k: ANSWERS[k][:2] for k in ("good", "bad")}, progress=False
    )
    assert len(result.judgements) == 4 and result.num_invalid == 0
    for j in result.judgements:
        assert j.verdict in ("A", "B") and 0 <= j.details["p_a"] <= 1
        assert (j.verdict == "A") == (j.details["p_a"] >= 0.5)
    assert sum(result.elo.values()) == pytest.approx(3000)


# --- the command -----------------------------------------------------------------------------


def _completions(path, model, answers, prompts=PROMPTS):
    rows = [
        {"prompt": p, "completion": a, "model": model}
        for p, a in zip(prompts, answers, strict=True)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_cli_judge_with_a_local_endpoint(tmp_path, monkeypatch):
    from superhf.cli import app

    paris = ["Paris, of course.", "Paris.", "Paris is not a number."]
    a = _completions(tmp_path / "a.jsonl", "paris-bot", paris)
    b = _completions(tmp_path / "b.jsonl", "other-bot", ["Lyon.", "Lyon."], PROMPTS[:2])
    monkeypatch.setenv("SUPERHF_JUDGE_API_KEY", KEY)
    out = tmp_path / "out"
    with ChatServer() as server:
        result = CliRunner().invoke(
            app,
            ["judge", a, b, "--judge_model", "m", "--judge_url", server.url,
             "--output_dir", str(out), "--num_orderings", "50"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "judge.json").read_text())
    assert data["num_prompts"] == 2 and data["num_prompts_unaligned"] == 1
    assert data["elo"]["paris-bot"] > data["elo"]["other-bot"]
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 4
    assert "Elo" in result.output and "paris-bot" in result.output
    for file in out.iterdir():
        assert KEY not in file.read_text()
    assert KEY not in result.output


def test_cli_judge_bad_input_exits_2(tmp_path):
    from superhf.cli import app

    one = _completions(tmp_path / "one.jsonl", "only", ["x", "y", "z"])
    result = CliRunner().invoke(app, ["judge", one, "--judge_model", "m"])
    assert result.exit_code == 2 and "at least two" in result.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "model": "m"}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["judge", one, str(broken), "--judge_model", "m"])
    assert result.exit_code == 2
    assert "broken.jsonl, line 1" in result.output and "`completion`" in result.output
    assert "Traceback" not in result.output


def test_cli_judge_with_a_local_model(tiny_model_dir, tmp_path):
    from superhf.cli import app

    answers = {m: ANSWERS[m] for m in ("good", "bad")}
    both = tmp_path / "both.jsonl"  # one file holding two models
    rows = [
        {"prompt": p, "completion": answers[m][i], "model": m}
        for m in answers
        for i, p in enumerate(PROMPTS)
    ]
    both.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = ["judge", str(both), "--judge_backend", "local", "--judge_model", str(tiny_model_dir)]
    result = CliRunner().invoke(app, [*args, "--output_dir", str(out), "--num_prompts", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "judge.json").read_text())
    assert data["judge"] == {"backend": "local-hf", "model": str(tiny_model_dir)}
    assert data["num_judgements"] == 4 and set(data["elo"]) == {"good", "bad"}
