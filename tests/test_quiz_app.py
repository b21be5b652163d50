"""The lesson app through gradio_client: pipeline, quiz (state passed back like the browser does), flashcards,
teach-it-back. The browser's storage is played by the test: each call gets the state the last one returned."""

import html
import importlib.util
import logging
import re
import sys

import gradio as gr
import pytest

from shared.apps import SPACES_DIR, load_app
from shared.lesson import load_lesson

APP = "quiz"  # served by the `client` fixture in conftest.py

EXPECTED_ENDPOINTS = {
    "/pipeline_pretraining", "/pipeline_sft", "/pipeline_preference", "/pipeline_tools_safety",
    "/quiz_start", "/quiz_answer", "/quiz_next", "/quiz_previous", "/quiz_restart",
    "/flashcards_start", "/flashcards_flip", "/flashcards_again", "/flashcards_got_it", "/flashcards_reset",
    "/teach_back",
}  # fmt: skip


@pytest.fixture(scope="module")
def lesson():
    return load_lesson()


def test_every_event_has_an_api_name(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == EXPECTED_ENDPOINTS


@pytest.mark.parametrize(
    ("endpoint", "title", "columns"),
    [
        ("/pipeline_pretraining", "Pretraining", {"text"}),
        ("/pipeline_sft", "Supervised fine-tuning", {"messages"}),
        ("/pipeline_preference", "Preference optimization", {"prompt", "chosen", "rejected"}),
        ("/pipeline_tools_safety", "Tools and safety", {"messages", "tools"}),
    ],
)
def test_pipeline_stage(client, endpoint, title, columns):
    text, rows = client.predict(api_name=endpoint)[:2]
    assert text.startswith(f"## {title}") and "Typical scale" in text and "What changes in the model" in text
    assert columns <= set().union(*(r["row"] for r in rows))


def test_quiz_is_shuffled_per_visitor_and_scored(client, lesson):
    progress, question, radio, feedback, score = client.predict(None, api_name="/quiz_start")
    other = client.predict(None, api_name="/quiz_start")[0]
    assert progress["order"] != other["order"]  # 15! orders: two visitors practically never share one
    assert question.startswith(f"### Question 1 of {len(lesson.questions)}") and feedback == ""
    assert client.predict(progress, api_name="/quiz_start")[0] == progress  # saved progress comes back as is

    correct_count = 0
    for i in range(len(lesson.questions)):
        qid, option_order = progress["order"][i]
        q = lesson.question(qid)
        # Answer the first question wrong, the rest right, always by the shuffled choice values.
        choice = next(o for o in option_order if q.options[o].correct != (i == 0))
        progress, _, radio, feedback, score = client.predict(progress, choice, api_name="/quiz_answer")
        correct_count += q.options[choice].correct
        assert radio["interactive"] is False and radio["value"] == choice
        # Every option explained, not just the right one (the Markdown escapes tokens such as <end_of_turn>).
        assert all(o.explanation in html.unescape(feedback) for o in q.options)
        progress = client.predict(progress, api_name="/quiz_next")[0]
    assert f"Final score: {correct_count} / {len(lesson.questions)}" in score
    assert correct_count == len(lesson.questions) - 1

    progress = client.predict(progress, api_name="/quiz_previous")[0]
    assert progress["position"] == len(lesson.questions) - 2
    fresh = client.predict(api_name="/quiz_restart")[0]
    assert fresh["answers"] == {} and fresh["position"] == 0


def test_quiz_answer_errors_are_friendly(client):
    progress = client.predict(None, api_name="/quiz_start")[0]
    with pytest.raises(Exception, match="Pick an answer first"):
        client.predict(progress, None, api_name="/quiz_answer")


def test_flashcards_flip_and_leitner(client, lesson):
    deck, card, summary = client.predict(None, api_name="/flashcards_start")
    first = deck["current"]
    assert first == lesson.flashcards[0].id and "pts-card-front" in card and "Due now: 12 of 12" in summary
    deck, card, _ = client.predict(deck, api_name="/flashcards_flip")
    assert deck["flipped"] and "pts-card-back" in card
    deck, card, summary = client.predict(deck, api_name="/flashcards_got_it")
    assert deck["cards"][first]["box"] == 2 and deck["current"] != first and "Box 2: 1" in summary
    second = deck["current"]
    deck = client.predict(deck, api_name="/flashcards_again")[0]
    assert deck["cards"][second]["box"] == 1 and deck["current"] not in (first, second)
    deck = client.predict(api_name="/flashcards_reset")[0]
    assert all(entry["box"] == 1 for entry in deck["cards"].values())


def test_teach_back(client):
    text = (
        "A pretrained model only predicts the next token, so it continues your question instead of answering it. "
        "SFT trains it on example conversations so that it learns to reply like an assistant. "
        "Preference optimization then shows it a chosen and a rejected answer "
        "so it learns which replies people prefer. "
        "Updating every weight needs far too much GPU memory, so LoRA freezes the model and trains two small "
        "low-rank matrices instead."
    )
    score, report = client.predict(text, api_name="/teach_back")
    assert score >= 7 and report.startswith(f"**Score: {int(score)} / 10**") and "you wrote" in report
    with pytest.raises(Exception, match="Write a few sentences"):
        client.predict("", api_name="/teach_back")


def test_teach_back_in_another_language_gets_the_english_only_message(client):
    french = "Un modèle de base ne fait que prédire le mot suivant, donc il continue le texte au lieu de répondre."
    with pytest.raises(Exception, match="reads English only"):
        client.predict(french, api_name="/teach_back")


# ------------------------------------------------------------------ app protocol and the browser-state key


def test_app_protocol():
    app = load_app(APP)
    assert app.TITLE == "Lesson & quiz" and isinstance(app.demo, gr.Blocks)
    assert app.warm_up() is None and app.warm_up() is None  # starts the grader's warm-up once, returns at once


def test_browser_state_key_comes_from_the_environment_or_is_random_per_process():
    app = load_app(APP)
    assert app.browser_state_secret({"PTS_BROWSER_STATE_SECRET": "a-key-set-by-the-owner"}) == "a-key-set-by-the-owner"
    first, second = app.browser_state_secret({}), app.browser_state_secret({"PTS_BROWSER_STATE_SECRET": "  "})
    assert re.fullmatch(r"[0-9a-f]{64}", first) and re.fullmatch(r"[0-9a-f]{64}", second) and first != second
    # Issue 13: the key was a constant in the source, the same for every deployment.
    assert "post-training-spaces-lesson" not in (SPACES_DIR / APP / "app.py").read_text(encoding="utf-8")


def test_browser_state_uses_the_configured_key_and_never_logs_it(monkeypatch, caplog, capfd):
    canary = "canary-key-7f3a9c21d4"
    monkeypatch.setenv("PTS_BROWSER_STATE_SECRET", canary)
    caplog.set_level(logging.DEBUG)
    # A second copy of the app module, built with the key in the environment (the served copy is cached).
    spec = importlib.util.spec_from_file_location("pts_quiz_key_test", SPACES_DIR / APP / "app.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        states = [b for b in module.demo.blocks.values() if isinstance(b, gr.BrowserState)]
        assert len(states) == 2 and all(state.secret == canary for state in states)
        module.quiz_start(None)
    finally:
        sys.modules.pop("pts_quiz_key_test", None)
    out, err = capfd.readouterr()
    assert "PTS_BROWSER_STATE_SECRET" in caplog.text  # where the key came from is logged ...
    assert canary not in caplog.text + out + err  # ... the key itself never
