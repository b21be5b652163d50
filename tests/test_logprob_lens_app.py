"""The log-prob lens app through gradio_client on the real embedded model, and its views on their own."""

from __future__ import annotations

import contextlib
import io
import time

import pytest
import yaml

from shared.apps import SPACES_DIR
from shared.views import logprobs as views

APP = "logprob_lens"  # served by the `client` fixture in conftest.py
TRAP = ("What is the capital of France?", "Paris.", "What is the capital of Germany? What is the capital of Italy?")


def score(client, prompt, chosen, rejected):
    return client.predict(prompt=prompt, chosen=chosen, rejected=rejected, api_name="/score")


@pytest.mark.slow
def test_score_returns_every_model_and_post_training_prefers_the_answer(client):
    result = score(client, *TRAP)
    rows = {row["model"]: row for row in result["rows"]}
    assert list(rows) == ["base", "sft", "sft+dpo"]
    assert rows["sft"]["reference"] == "base" and rows["sft+dpo"]["reference"] == "sft"
    assert "".join(t["token"] for t in rows["base"]["chosen_tokens"]) == "Paris.<end_of_turn>\n"
    # SFT makes the answer far likelier than the quiz-page continuation the base expects.
    assert rows["sft"]["chosen_logp"] > rows["base"]["chosen_logp"]
    assert rows["sft"]["margin"] > 0 and rows["sft"]["p_chosen"] > 0.5
    assert 0 < rows["sft+dpo"]["p_chosen"] < 1


@pytest.mark.slow
def test_repeated_pair_is_answered_from_the_cache(client):
    score(client, *TRAP)
    started = time.perf_counter()
    again = score(client, *TRAP)
    assert time.perf_counter() - started < 2.0
    assert again["rows"][0]["chosen_logp"] == score(client, *TRAP)["rows"][0]["chosen_logp"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "pair, message",
    [
        (("", "a", "b"), "prompt is empty"),
        (("Hi", "a " * 300, "b"), "chosen answer is"),
    ],
)
def test_bad_input_is_one_sentence_on_the_page(client, pair, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message) as info:
        score(client, *pair)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.slow
def test_the_use_via_api_example_runs(client):
    spec = yaml.safe_load((SPACES_DIR / APP / "space.yaml").read_text(encoding="utf-8"))
    (example,) = [api for api in spec["api"] if api["endpoint"] == "/score"]
    code = example["code"].replace("{space}", client.src)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "space.yaml:/score", "exec"), {})
    lines = [line for line in printed.getvalue().splitlines() if not line.startswith("Loaded as API")]
    assert lines[0].startswith("beta = ")
    assert [line.split()[0] for line in lines[1:]] == ["base", "sft", "sft+dpo"]
    assert "margin vs base" in lines[2] and "margin vs sft" in lines[3]


@pytest.mark.slow
def test_the_app_keeps_the_protocol(client):
    from shared.apps import load_app

    app = load_app(APP)
    assert app.TITLE == "Log-probs & DPO"
    started = time.perf_counter()
    app.warm_up()
    app.warm_up()  # idempotent
    assert time.perf_counter() - started < 0.5, "warm_up must return at once"
    from shared import compute

    (thread,) = [t for name, t in compute._started.items() if name == "warm-logprob-lens"]  # started once
    thread.join(timeout=300)
    # Warmed up, every teaching preset answers from the cache: the page's first view shows numbers.
    from shared.logprobs import cached_result

    assert all(cached_result(p.prompt, p.chosen, p.rejected) for p in app.TEACHING)
    first = app.first_view()
    assert first[0]["rows"][0]["model"] == "base" and "Margin" in first[1]
    assert app.SCORE_CONCURRENCY == 1


# --------------------------------------------------------------------------------------------
# Views: plain functions, no model
# --------------------------------------------------------------------------------------------


def fake_result():
    def tokens(values, deltas=None):
        out = []
        for i, (text, logp) in enumerate(values):
            token = {"token": text, "id": i, "logp": logp}
            if deltas:
                token["delta"] = deltas[i]
            out.append(token)
        return out

    chosen = [("<b>Paris</b>", -0.2), ("<end_of_turn>", -0.1)]
    rejected = [("What", -3.0), ("\n", -9.0)]
    base = {"model": "base", "chosen_logp": -0.3, "rejected_logp": -12.0}
    sft = {"model": "sft", "reference": "base", "chosen_logp": 0.0, "rejected_logp": -14.0}
    return {
        "beta": 0.1,
        "rows": [
            {
                **base,
                "chosen_tokens": tokens(chosen),
                "rejected_tokens": tokens(rejected),
                "chosen_sft_loss": 0.15,
                "rejected_sft_loss": 6.0,
            },
            {
                **sft,
                "chosen_tokens": tokens(chosen, [2.5, -0.5]),
                "rejected_tokens": tokens(rejected, [-1.0, -1.0]),
                "chosen_sft_loss": 0.1,
                "rejected_sft_loss": 7.0,
                "chosen_reward": 0.03,
                "rejected_reward": -0.2,
                "margin": 0.23,
                "p_chosen": 0.557,
                "dpo_loss": 0.585,
            },
        ],
    }


def test_views_escape_token_text_and_show_whitespace():
    result = fake_result()
    for html in (views.tokens_html(result), views.deltas_html(result)):
        assert "<b>Paris</b>" not in html and "&lt;b&gt;Paris&lt;/b&gt;" in html
        assert "↵" in html  # a newline token is visible
        assert "&lt;end_of_turn&gt;" in html


def test_delta_chips_are_green_when_pushed_up_and_red_when_pushed_down():
    html = views.deltas_html(fake_result())
    assert "Δ log p = +2.500 (pushed up)" in html and "Δ log p = -0.500 (pushed down)" in html
    assert views._delta_colour(2.5).startswith("hsl(140") and views._delta_colour(-0.5).startswith("hsl(0")
    # The bigger the change, the darker the chip.
    light = lambda colour: float(colour.rsplit(",", 1)[1].rstrip("%)"))  # noqa: E731
    assert light(views._delta_colour(3.0)) < light(views._delta_colour(0.3))
    # The base has no reference, so it has no Δ block of its own.
    assert "chosen<br>" not in views.deltas_html({"beta": 0.1, "rows": fake_result()["rows"][:1]})


def test_summary_marks_a_positive_margin_and_names_the_reference():
    html = views.summary_html(fake_result())
    assert "+0.23" in html and "#dcfce7" in html
    assert "vs Base (embedded Gemma 3 270M)" in html
    assert "β = 0.1" in html
    assert "Pick a preset" in views.summary_html(None)


def test_accuracy_chart_reads_the_stored_record_and_says_when_it_is_missing_or_stale():
    assert "python -m train.evaluate" in views.accuracy_html(None)
    record = {
        "pairs": 40,
        "stale": False,
        "models": {
            "base": {"logp_prefers_chosen": 0.4},
            "sft": {"reference": "base", "accuracy": 0.75, "correct": 30, "logp_prefers_chosen": 0.6},
            "sft+dpo": {"reference": "sft", "accuracy": 0.9, "correct": 36, "logp_prefers_chosen": 0.5},
        },
    }
    html = views.accuracy_html(record)
    assert "75%" in html and "(30/40)" in html and "90%" in html and "(36/40)" in html
    assert "width:75.0%" in html and "changed after" not in html
    assert "changed after" in views.accuracy_html({**record, "stale": True})


def test_explainer_names_every_number_with_beta():
    text = views.explainer_markdown(0.1)
    for term in ("log π", "SFT loss", "Reward", "Margin", "σ(margin)", "DPO loss", "Δlog-prob", "β = 0.1"):
        assert term in text
