"""Lesson content rules, quiz shuffling and scoring, the Leitner flashcard schedule, and their views
(no model, no UI)."""

import ast
import dataclasses
import math
import random
from pathlib import Path

import pytest

from shared.apps import APP_NAMES, SPACES_DIR
from shared.lesson import (
    CHECK_NUMBERS,
    DAY_S,
    FLASHCARD_THEMES,
    LEITNER_INTERVALS_S,
    STAGE_IDS,
    answer_question,
    flip_card,
    lesson_problems,
    load_lesson,
    move_quiz,
    new_deck,
    new_quiz,
    next_card,
    quiz_view,
    restore_deck,
    restore_quiz,
    review_card,
    show_next,
)
from shared.views.lesson import (
    card_html,
    deck_summary_markdown,
    feedback_markdown,
    question_markdown,
    score_markdown,
    stage_example_rows,
    stage_markdown,
)


@pytest.fixture(scope="module")
def lesson():
    return load_lesson()


# ------------------------------------------------------------------ content


def test_content_passes_every_rule(lesson):
    assert lesson_problems(lesson) == []


def test_every_question_has_one_correct_option_and_an_explanation_for_each(lesson):
    assert len(lesson.questions) >= 12
    for q in lesson.questions:
        assert sum(o.correct for o in q.options) == 1, q.id
        assert all(o.explanation.strip() for o in q.options), q.id


def test_questions_cover_all_eight_concepts_and_the_five_checks(lesson):
    assert len(lesson.concepts) == 8
    assert {c.id for c in lesson.concepts} <= {c for q in lesson.questions for c in q.concepts}
    assert set(CHECK_NUMBERS) <= {q.check for q in lesson.questions}


def test_flashcards_hold_the_six_themes(lesson):
    assert len(lesson.flashcards) >= 10
    assert set(FLASHCARD_THEMES) <= {c.theme for c in lesson.flashcards}


def test_stages_have_rows_in_the_trainer_formats(lesson):
    assert tuple(s.id for s in lesson.stages) == STAGE_IDS
    columns = {s.id: set().union(*(e.row for e in s.examples)) for s in lesson.stages}
    assert "text" in columns["pretraining"]
    assert "messages" in columns["sft"]
    assert {"prompt", "chosen", "rejected"} <= columns["preference"]
    assert stage_example_rows(lesson.stage("sft"))[0]["row"]["messages"][0]["role"] == "user"
    with pytest.raises(ValueError, match="Unknown stage"):
        lesson.stage("reinforcement")


def _app_title(name: str) -> str:
    """An app's TITLE, read from its source (importing the app would load its models)."""
    tree = ast.parse(Path(SPACES_DIR, name, "app.py").read_text(encoding="utf-8"))
    return next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TITLE" for t in node.targets)
    )


@pytest.mark.parametrize("stage_id", ["sft", "preference"])
def test_sft_and_preference_stages_point_to_the_logprob_tab(lesson, stage_id):
    # Issue 16: the alignment problem's point (both steps optimise a log-probability) is computed in its own tab.
    assert "logprob_lens" in APP_NAMES
    text = stage_markdown(lesson.stage(stage_id))
    assert f"**{_app_title('logprob_lens')}** tab" in text and "**See it computed.**" in text
    if stage_id == "preference":
        assert "alignment problem" in text and "log-probabilit" in text


def test_stages_without_a_link_show_no_empty_section(lesson):
    assert "See it computed" not in stage_markdown(lesson.stage("pretraining"))


def test_broken_content_is_reported(lesson):
    q = lesson.questions[0]
    two_right = dataclasses.replace(q, options=tuple(dataclasses.replace(o, correct=True) for o in q.options))
    no_explanation = dataclasses.replace(
        lesson.questions[1], options=tuple(dataclasses.replace(o, explanation="") for o in lesson.questions[1].options)
    )
    broken = dataclasses.replace(
        lesson,
        questions=(two_right, no_explanation, *lesson.questions[2:]),
        flashcards=tuple(c for c in lesson.flashcards if c.theme != "qlora"),
    )
    problems = " | ".join(lesson_problems(broken))
    assert f"{q.id}: has 4 correct options" in problems
    assert f"{lesson.questions[1].id}: every option needs an explanation" in problems
    assert "no flashcard has theme 'qlora'" in problems
    # Dropping the only question of a check shows up as a missing check.
    no_check_3 = dataclasses.replace(lesson, questions=tuple(q for q in lesson.questions if q.check != 3))
    assert any("check 3" in p for p in lesson_problems(no_check_3))


def test_markdown_keeps_special_tokens_visible(lesson):
    progress = new_quiz(lesson, random.Random(0))
    position = next(i for i, (qid, _) in enumerate(progress["order"]) if qid == "q-special-tokens")
    view = quiz_view({**progress, "position": position}, lesson)
    assert "&lt;end_of_turn&gt;" in question_markdown(view, lesson)


# ------------------------------------------------------------------ quiz


def test_shuffle_depends_on_the_visitor_not_on_import(lesson):
    a, b = new_quiz(lesson, random.Random(1)), new_quiz(lesson, random.Random(2))
    assert a["order"] != b["order"]
    assert new_quiz(lesson, random.Random(1)) == a  # same seed, same quiz: reproducible for tests
    assert sorted(qid for qid, _ in a["order"]) == sorted(q.id for q in lesson.questions)
    for qid, options in a["order"]:
        assert sorted(options) == list(range(len(lesson.question(qid).options)))


def test_restore_keeps_valid_progress_and_replaces_tampered(lesson):
    progress = new_quiz(lesson, random.Random(3))
    progress = answer_question(progress, lesson, 0)
    assert restore_quiz(progress, lesson, random.Random(9)) == progress
    assert restore_quiz(None, lesson, random.Random(4)) == new_quiz(lesson, random.Random(4))
    tampered = {**progress, "order": [["no-such-question", [0, 1]], *progress["order"][1:]]}
    assert restore_quiz(tampered, lesson, random.Random(4)) == new_quiz(lesson, random.Random(4))
    bad_answer = {**progress, "answers": {progress["order"][0][0]: 99}, "position": 500}
    restored = restore_quiz(bad_answer, lesson, random.Random(4))
    assert restored["answers"] == {} and restored["position"] == len(lesson.questions) - 1


@pytest.mark.parametrize(
    "tampered",
    [
        {"position": math.inf},  # int(inf) raises OverflowError, not ValueError
        {"position": "nan"},
        {"answers": {"q": math.inf}},
        {"answers": {f"q{i}": 0 for i in range(10_000)}},  # more answers than questions
        {"order": [["q", list(range(10**5))]] * 10**3},  # huge: refused on its length, not converted
        {"order": "not a list"},
    ],
)
def test_restore_quiz_starts_over_on_any_tampering(lesson, tampered):
    progress = {**new_quiz(lesson, random.Random(3)), **tampered}
    assert restore_quiz(progress, lesson, random.Random(4)) == new_quiz(lesson, random.Random(4))


def test_first_answer_counts_and_bad_answers_are_refused(lesson):
    progress = new_quiz(lesson, random.Random(5))
    with pytest.raises(ValueError, match="Pick an answer"):
        answer_question(progress, lesson, None)
    for bad in (7, math.inf, math.nan, "one", [1]):
        with pytest.raises(ValueError, match="not one of the options"):
            answer_question(progress, lesson, bad)
    once = answer_question(progress, lesson, 1)
    assert answer_question(once, lesson, 2) == once


def test_feedback_explains_every_option(lesson):
    progress = answer_question(new_quiz(lesson, random.Random(6)), lesson, 0)
    view = quiz_view(progress, lesson)
    text = feedback_markdown(view)
    assert text.count("\n- ") == len(view.question.options)
    assert "*(your answer)*" in text


def test_score_after_a_full_quiz(lesson):
    progress = new_quiz(lesson, random.Random(7))
    wrong_qid = progress["order"][0][0]
    for i, (qid, _) in enumerate(progress["order"]):
        correct = lesson.question(qid).correct_index
        choice = (correct + 1) % 4 if qid == wrong_qid else correct
        progress = answer_question(move_quiz(progress, i - progress["position"]), lesson, choice)
    view = quiz_view(progress, lesson)
    assert view.finished and (view.correct, view.answered) == (len(lesson.questions) - 1, len(lesson.questions))
    summary = score_markdown(view, progress, lesson)
    assert f"Final score: {len(lesson.questions) - 1} / {len(lesson.questions)}" in summary
    assert "Worth another look" in summary
    assert move_quiz(progress, +100)["position"] == len(lesson.questions) - 1
    assert move_quiz(progress, -100)["position"] == 0


# ------------------------------------------------------------------ Leitner schedule


def test_leitner_schedule_by_hand(lesson):
    t0 = 1_000_000.0
    deck = show_next(new_deck(lesson), lesson, t0)
    first = lesson.flashcards[0].id
    assert deck["current"] == first  # all due, all box 1: lesson order decides
    # Got it: box 1 -> 2, due one day later (86,400 s).
    deck = review_card(deck, lesson, True, t0)
    assert deck["cards"][first] == {"box": 2, "due": t0 + DAY_S}
    second = deck["current"]
    assert second == lesson.flashcards[1].id and not deck["flipped"]
    # Again: back to box 1, due now, so it queues behind the cards that have been due since the start.
    deck = review_card(deck, lesson, False, t0 + 10)
    assert deck["cards"][second] == {"box": 1, "due": t0 + 10}
    assert deck["current"] == lesson.flashcards[2].id
    # Box 2 -> 3 waits 3 days; the top box (5) stays 5 and waits 14 days.
    deck = {**deck, "current": first}
    deck = review_card(deck, lesson, True, t0 + DAY_S)
    assert deck["cards"][first] == {"box": 3, "due": t0 + DAY_S + 3 * DAY_S}
    deck = {**deck, "cards": {**deck["cards"], first: {"box": 5, "due": 0.0}}, "current": first}
    deck = review_card(deck, lesson, True, t0)
    assert deck["cards"][first] == {"box": 5, "due": t0 + 14 * DAY_S}


def test_overdue_cards_come_first_and_caught_up_means_none(lesson):
    ids = [c.id for c in lesson.flashcards]
    deck = new_deck(lesson)
    deck["cards"] = {cid: {"box": 2, "due": 500.0} for cid in ids}
    deck["cards"][ids[3]] = {"box": 4, "due": 100.0}  # longest overdue wins over box and order
    assert next_card(deck, lesson, now=600.0) == ids[3]
    assert next_card(deck, lesson, now=50.0) is None
    summary = deck_summary_markdown(deck, now=50.0)
    assert "Due now: 0 of" in summary and "All caught up" in summary and "1 min" in summary
    assert "Box 2: 11" in summary and "Box 4: 1" in summary


def test_flip_and_empty_table(lesson):
    deck = show_next(new_deck(lesson), lesson, 0.0)
    flipped = flip_card(deck)
    assert flipped["flipped"] and "pts-card-back" in card_html(flipped, lesson)
    empty = {**deck, "current": None}
    assert "Nothing due" in card_html(empty, lesson)
    with pytest.raises(ValueError, match="No card to flip"):
        flip_card(empty)
    with pytest.raises(ValueError, match="No card to review"):
        review_card(empty, lesson, True, 0.0)


def test_card_text_is_escaped(lesson):
    card = next(c for c in lesson.flashcards if "<end_of_turn>" in c.back)
    deck = {**new_deck(lesson), "current": card.id, "flipped": True}
    assert "&lt;end_of_turn&gt;" in card_html(deck, lesson)


def test_restore_deck_adds_new_cards_and_drops_unknown(lesson):
    ids = [c.id for c in lesson.flashcards]
    saved = {"cards": {ids[0]: {"box": 9, "due": 5}, "retired-card": {"box": 3, "due": 1}}, "current": "retired-card"}
    deck = restore_deck(saved, lesson)
    assert deck["cards"][ids[0]] == {"box": 5, "due": 5.0}  # clamped to the top box
    assert deck["cards"][ids[1]] == {"box": 1, "due": 0.0}
    assert "retired-card" not in deck["cards"] and deck["current"] is None
    assert restore_deck("garbage", lesson) == new_deck(lesson)


@pytest.mark.parametrize("due", [math.inf, -math.inf, math.nan, "soon", 10**400])
def test_restore_deck_refuses_due_times_that_are_not_finite(lesson, due):
    ids = [c.id for c in lesson.flashcards]
    assert restore_deck({"cards": {ids[0]: {"box": 2, "due": due}}}, lesson) == new_deck(lesson)


def test_restore_deck_caps_a_due_time_at_its_box_interval(lesson):
    # A date in the far future would hide the card for good and print a 300-digit wait in the summary.
    card = lesson.flashcards[0].id
    deck = restore_deck({"cards": {card: {"box": 2, "due": 1e300}}}, lesson, now=1000.0)
    assert deck["cards"][card] == {"box": 2, "due": 1000.0 + LEITNER_INTERVALS_S[2]}
    assert "next card is due" not in deck_summary_markdown(deck, 1000.0)  # the other cards are due now
