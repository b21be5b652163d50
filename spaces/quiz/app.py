"""The lesson app: alignment pipeline explorer, quiz, flashcards and a teach-it-back grader.

    python spaces/quiz/app.py        # then open http://127.0.0.1:7860

Everything runs offline on a CPU. The content is YAML in shared/data/lesson/, the logic is in
shared/lesson.py and shared/teach_back.py, the Markdown and HTML in shared/views/lesson.py; this file is
only layout and wiring.

Each visitor's quiz progress and flashcard schedule live in their own browser (gr.BrowserState), never on
the server. Gradio encrypts what it stores there with a key this app gives it: PTS_BROWSER_STATE_SECRET
when that environment variable is set (on a Space, set it as a secret), otherwise a random key made when
the process starts. With a random key, a restart (a new deployment, a Space waking up) makes what visitors
had stored unreadable: they get a fresh quiz and a fresh deck, which is harmless. Set the variable to keep
their progress across restarts. The key is handed to the visitor's browser (gradio encrypts there), so it
keeps one app's stored state apart from another's rather than hiding anything from the visitor: nothing
private is stored, only quiz answers and card boxes. The key is never logged.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import time

import gradio as gr

from shared import teach_back as grader
from shared.compute import serve
from shared.lesson import (
    STAGE_IDS,
    answer_question,
    flip_card,
    load_lesson,
    move_quiz,
    new_deck,
    new_quiz,
    quiz_view,
    restore_deck,
    restore_quiz,
    review_card,
    show_next,
)
from shared.teach_back import MAX_CHARS, default_rubric, grade
from shared.views.lesson import (
    card_html,
    deck_summary_markdown,
    feedback_markdown,
    grade_report_markdown,
    question_markdown,
    quiz_choices,
    score_markdown,
    stage_example_rows,
    stage_markdown,
)

logger = logging.getLogger(__name__)

TITLE = "Lesson & quiz"
LESSON = load_lesson()  # immutable content, shared safely by every visitor
STAGE_LABELS = {
    "pretraining": "① Pretraining",
    "sft": "② SFT",
    "preference": "③ Preference optimization",
    "tools-safety": "④ Tools & safety",
}
SECRET_ENV = "PTS_BROWSER_STATE_SECRET"


def browser_state_secret(environ=os.environ) -> str:
    """The key gr.BrowserState encrypts with: the environment's, or a random one for this process (see above)."""
    secret = environ.get(SECRET_ENV, "").strip()
    if secret:
        logger.info("Browser state key: from %s", SECRET_ENV)
        return secret
    logger.info("Browser state key: random for this process (set %s to keep progress across restarts)", SECRET_ENV)
    return secrets.token_hex(32)  # 256 bits


BROWSER_SECRET = browser_state_secret()

CARD_CSS = """
.pts-card { cursor: pointer; min-height: 11rem; padding: 1.5rem; border-radius: 12px;
  border: 2px solid var(--border-color-primary); background: var(--block-background-fill);
  display: flex; flex-direction: column; justify-content: center; text-align: center; }
.pts-card-back { border-color: var(--color-accent); }
.pts-card-text { font-size: 1.15rem; margin: 0.75rem 0; }
.pts-card-meta, .pts-card-hint { font-size: 0.8rem; opacity: 0.7; margin: 0; }
"""


def _fresh_rng() -> random.Random:
    """A new generator seeded from the OS for each visitor, so every visitor gets their own order."""
    return random.Random()


# ------------------------------------------------------------------ pipeline explorer


def _refusal(err: Exception) -> gr.Error:
    """A visitor's input refused: its one sentence on the page, and no traceback in the server log."""
    return gr.Error(str(err), print_exception=False)


def show_stage(stage_id: str):
    try:
        stage = LESSON.stage(stage_id)
    except ValueError as err:
        raise _refusal(err) from None
    buttons = [gr.Button(variant="primary" if sid == stage_id else "secondary") for sid in STAGE_IDS]
    return (stage_markdown(stage), stage_example_rows(stage), *buttons)


def _stage_handler(stage_id: str):
    def handler():
        return show_stage(stage_id)

    handler.__name__ = f"show_stage_{stage_id.replace('-', '_')}"
    return handler


# ------------------------------------------------------------------ quiz


def _quiz_screen(progress: dict):
    view = quiz_view(progress, LESSON)
    answered = view.chosen is not None
    return (
        progress,
        question_markdown(view, LESSON),
        gr.Radio(choices=quiz_choices(view), value=view.chosen, interactive=not answered),
        feedback_markdown(view),
        score_markdown(view, progress, LESSON),
        gr.Button(interactive=not answered),
    )


def quiz_start(progress):
    return _quiz_screen(restore_quiz(progress, LESSON, _fresh_rng()))


def quiz_answer(progress, choice):
    progress = restore_quiz(progress, LESSON, _fresh_rng())
    try:
        progress = answer_question(progress, LESSON, choice)
    except ValueError as err:
        raise _refusal(err) from None
    return _quiz_screen(progress)


def quiz_next(progress):
    return _quiz_screen(move_quiz(restore_quiz(progress, LESSON, _fresh_rng()), +1))


def quiz_previous(progress):
    return _quiz_screen(move_quiz(restore_quiz(progress, LESSON, _fresh_rng()), -1))


def quiz_restart():
    return _quiz_screen(new_quiz(LESSON, _fresh_rng()))


# ------------------------------------------------------------------ flashcards


def _cards_screen(deck: dict):
    return deck, card_html(deck, LESSON), deck_summary_markdown(deck, time.time())


def flashcards_start(deck):
    now = time.time()
    deck = restore_deck(deck, LESSON, now)
    if deck["current"] is None:
        deck = show_next(deck, LESSON, now)
    return _cards_screen(deck)


def flashcards_flip(deck):
    try:
        return _cards_screen(flip_card(restore_deck(deck, LESSON, time.time())))
    except ValueError as err:
        raise _refusal(err) from None


def _review(deck, knew_it: bool):
    now = time.time()
    try:
        return _cards_screen(review_card(restore_deck(deck, LESSON, now), LESSON, knew_it, now))
    except ValueError as err:
        raise _refusal(err) from None


def flashcards_again(deck):
    return _review(deck, knew_it=False)


def flashcards_got_it(deck):
    return _review(deck, knew_it=True)


def flashcards_reset():
    return _cards_screen(show_next(new_deck(LESSON), LESSON, time.time()))


# ------------------------------------------------------------------ teach it back


def teach_back(text: str):
    try:
        result = grade(text)
    except ValueError as err:
        raise _refusal(err) from None
    return result.score, grade_report_markdown(result)


def warm_up() -> None:
    """Start loading the grader's model in the background and return at once (a second call does nothing)."""
    grader.warm_up_in_background()


# ------------------------------------------------------------------ layout

with gr.Blocks(title=TITLE) as demo:
    gr.Markdown(
        "# From base model to assistant\n"
        "Explore the post-training pipeline, test yourself, review with flashcards, then explain it back."
    )
    with gr.Tabs():
        with gr.Tab("Pipeline explorer"):
            gr.Markdown("Click a stage to see what it does, what its data looks like and what changes in the model.")
            with gr.Row(equal_height=True):
                stage_buttons = {}
                for i, sid in enumerate(STAGE_IDS):
                    if i:
                        gr.Markdown("<div style='text-align:center;font-size:1.6rem'>→</div>", min_height=0)
                    stage_buttons[sid] = gr.Button(
                        STAGE_LABELS[sid], variant="primary" if i == 0 else "secondary", scale=2
                    )
            first = LESSON.stage(STAGE_IDS[0])
            with gr.Row():
                stage_text = gr.Markdown(stage_markdown(first))
                stage_rows = gr.JSON(stage_example_rows(first), label="Example training row(s)", open=True)
            for sid, button in stage_buttons.items():
                button.click(
                    _stage_handler(sid),
                    outputs=[stage_text, stage_rows, *stage_buttons.values()],
                    api_name=f"pipeline_{sid.replace('-', '_')}",
                )

        with gr.Tab("Quiz"):
            quiz_progress = gr.BrowserState(None, storage_key="pts-lesson-quiz", secret=BROWSER_SECRET)
            question_text = gr.Markdown()
            choice = gr.Radio(label="Your answer", choices=[])
            with gr.Row():
                previous_button = gr.Button("← Previous")
                check_button = gr.Button("Check answer", variant="primary")
                next_button = gr.Button("Next →")
            feedback = gr.Markdown()
            score = gr.Markdown()
            restart_button = gr.Button("New shuffled quiz", variant="secondary", size="sm")
            quiz_outputs = [quiz_progress, question_text, choice, feedback, score, check_button]
            check_button.click(quiz_answer, [quiz_progress, choice], quiz_outputs, api_name="quiz_answer")
            next_button.click(quiz_next, [quiz_progress], quiz_outputs, api_name="quiz_next")
            previous_button.click(quiz_previous, [quiz_progress], quiz_outputs, api_name="quiz_previous")
            restart_button.click(quiz_restart, None, quiz_outputs, api_name="quiz_restart")
            demo.load(quiz_start, [quiz_progress], quiz_outputs, api_name="quiz_start")

        with gr.Tab("Flashcards"):
            deck_state = gr.BrowserState(None, storage_key="pts-lesson-flashcards", secret=BROWSER_SECRET)
            gr.Markdown(
                "Click the card to flip it. **Got it** moves the card up a box (it comes back after 1, 3, 7, "
                "then 14 days); **Again** sends it back to box 1, to see again today."
            )
            card = gr.HTML(css_template=CARD_CSS)
            with gr.Row():
                again_button = gr.Button("Again")
                flip_button = gr.Button("Flip")
                got_it_button = gr.Button("Got it", variant="primary")
            deck_summary = gr.Markdown()
            reset_button = gr.Button("Reset the deck", variant="secondary", size="sm")
            card_outputs = [deck_state, card, deck_summary]
            gr.on(
                [card.click, flip_button.click], flashcards_flip, [deck_state], card_outputs, api_name="flashcards_flip"
            )
            again_button.click(flashcards_again, [deck_state], card_outputs, api_name="flashcards_again")
            got_it_button.click(flashcards_got_it, [deck_state], card_outputs, api_name="flashcards_got_it")
            reset_button.click(flashcards_reset, None, card_outputs, api_name="flashcards_reset")
            demo.load(flashcards_start, [deck_state], card_outputs, api_name="flashcards_start")

        with gr.Tab("Teach it back"):
            gr.Markdown(
                f"**{default_rubric().prompt}**\n\n"
                "Write a few sentences in your own words. The grader runs offline: it compares each of your "
                "sentences with the key ideas of the lesson using a small sentence-embedding model, quotes the "
                "sentence that covers each idea, and points you to the part of the lesson to revisit. Lists of "
                "keywords, repeated sentences and instructions to the grader earn nothing."
            )
            explanation = gr.Textbox(
                label="Your explanation",
                lines=8,
                max_length=MAX_CHARS,
                info=f"Up to {MAX_CHARS:,} characters (about 500 words), in English.",
            )
            grade_button = gr.Button("Grade my explanation", variant="primary")
            teach_score = gr.Number(label="Score out of 10", precision=0, interactive=False)
            teach_report = gr.Markdown()
            grade_button.click(teach_back, [explanation], [teach_score, teach_report], api_name="teach_back")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warm_up()  # the grader's model loads while the visitor reads the lesson
    serve(demo)
