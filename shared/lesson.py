"""The lesson app's content and logic: pipeline stages, quiz, flashcards (no gradio in here).

The Markdown and HTML the app shows are built in shared/views/lesson.py; this module holds the content,
its validation and each visitor's state.

    python -c "from shared.lesson import load_lesson; print(load_lesson())"   # loads and validates the YAML

Content lives in shared/data/lesson/*.yaml; `load_lesson()` parses it into frozen dataclasses and refuses
content that breaks the rules the app relies on (one correct option per question, an explanation for
every option, every lesson concept and check asked, the six flashcard themes, the four stages).

Per-visitor state is plain JSON (it lives in the browser through gr.BrowserState), and every function
here takes the old state and returns a new one, so nothing is shared between visitors:

- quiz progress: {"order": [[question_id, [option_index, ...]], ...], "answers": {question_id: option_index},
  "position": int}, shuffled per visitor by `new_quiz(lesson, rng)`;
- flashcard deck: {"cards": {card_id: {"box": 1-5, "due": unix_seconds}}, "current": card_id | None,
  "flipped": bool}, scheduled by the Leitner system in `review_card`.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data" / "lesson"

STAGE_IDS = ("pretraining", "sft", "preference", "tools-safety")  # the pipeline, in order
FLASHCARD_THEMES = ("base-vs-instruct", "two-stages", "lora", "qlora", "chat-templates", "pre-vs-post")
CHECK_NUMBERS = (1, 2, 3, 4, 5)  # the five checks of the lesson's concept 8
MIN_QUESTIONS = 12
MIN_FLASHCARDS = 10

# Leitner boxes: a card moves up one box when you know it and back to box 1 when you don't. Box 1 comes
# back in the same sitting; higher boxes wait longer, roughly doubling, so known cards stop crowding out
# the ones you are still learning.
DAY_S = 24 * 60 * 60
LEITNER_INTERVALS_S = {1: 0, 2: 1 * DAY_S, 3: 3 * DAY_S, 4: 7 * DAY_S, 5: 14 * DAY_S}
TOP_BOX = max(LEITNER_INTERVALS_S)


# --------------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LessonConcept:
    id: str
    number: int
    title: str


@dataclass(frozen=True)
class Option:
    text: str
    correct: bool
    explanation: str


@dataclass(frozen=True)
class Question:
    id: str
    concepts: tuple[str, ...]
    check: int | None
    prompt: str
    options: tuple[Option, ...]

    @property
    def correct_index(self) -> int:
        return next(i for i, o in enumerate(self.options) if o.correct)


@dataclass(frozen=True)
class Flashcard:
    id: str
    front: str
    back: str
    theme: str | None


@dataclass(frozen=True)
class StageExample:
    label: str
    row: Any  # the row exactly as the trainer takes it (a dict of columns)


@dataclass(frozen=True)
class Stage:
    id: str
    title: str
    tagline: str
    does: str
    data_format: str
    trainer: str
    examples: tuple[StageExample, ...]
    changes: str
    scale: str
    stop_here: str
    see_it: str = ""  # Markdown: where the collection computes what this stage does (another tab), if anywhere


@dataclass(frozen=True)
class Lesson:
    concepts: tuple[LessonConcept, ...]
    checks: dict[int, str]
    stages: tuple[Stage, ...]
    questions: tuple[Question, ...]
    flashcards: tuple[Flashcard, ...]

    def question(self, question_id: str) -> Question:
        return next(q for q in self.questions if q.id == question_id)

    def flashcard(self, card_id: str) -> Flashcard:
        return next(c for c in self.flashcards if c.id == card_id)

    def stage(self, stage_id: str) -> Stage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        # The name is not echoed: it may come from a request, of any length and with any characters.
        raise ValueError(f"Unknown stage; choose one of {', '.join(STAGE_IDS)}.")

    def concept(self, concept_id: str) -> LessonConcept:
        return next(c for c in self.concepts if c.id == concept_id)


def _read(data_dir: Path, name: str) -> dict:
    path = data_dir / name
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return data


def parse_lesson(data_dir: Path | str = DATA_DIR) -> Lesson:
    """Read the YAML files into dataclasses, without checking the rules (see `lesson_problems`)."""
    data_dir = Path(data_dir)
    concepts_data = _read(data_dir, "concepts.yaml")
    try:
        concepts = tuple(LessonConcept(c["id"], int(c["number"]), c["title"]) for c in concepts_data["concepts"])
        checks = {int(k): str(v) for k, v in concepts_data["checks"].items()}
        stages = tuple(
            Stage(
                id=s["id"],
                title=s["title"],
                tagline=s["tagline"],
                does=s["does"],
                data_format=s["data_format"],
                trainer=s["trainer"],
                examples=tuple(StageExample(e["label"], e["row"]) for e in s["examples"]),
                changes=s["changes"],
                scale=s["scale"],
                stop_here=s["stop_here"],
                see_it=s.get("see_it", ""),
            )
            for s in _read(data_dir, "stages.yaml")["stages"]
        )
        questions = tuple(
            Question(
                id=q["id"],
                concepts=tuple(q["concepts"]),
                check=q.get("check"),
                prompt=q["prompt"],
                options=tuple(
                    Option(text=o["text"], correct=bool(o.get("correct", False)), explanation=o.get("explanation", ""))
                    for o in q["options"]
                ),
            )
            for q in _read(data_dir, "questions.yaml")["questions"]
        )
        flashcards = tuple(
            Flashcard(c["id"], c["front"], c["back"], c.get("theme"))
            for c in _read(data_dir, "flashcards.yaml")["flashcards"]
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"Lesson content in {data_dir} is missing a field: {err}") from err
    return Lesson(concepts, checks, stages, questions, flashcards)


def lesson_problems(lesson: Lesson) -> list[str]:
    """Every rule the content breaks, as readable lines; an empty list means the lesson is usable."""
    problems = []
    concept_ids = {c.id for c in lesson.concepts}

    def texts_present(*texts) -> bool:
        return all(isinstance(t, str) and t.strip() for t in texts)

    if len(lesson.questions) < MIN_QUESTIONS:
        problems.append(f"only {len(lesson.questions)} questions; need at least {MIN_QUESTIONS}")
    for kind, ids in (("question", [q.id for q in lesson.questions]), ("flashcard", [c.id for c in lesson.flashcards])):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            problems.append(f"duplicate {kind} ids: {duplicates}")
    for q in lesson.questions:
        n_correct = sum(o.correct for o in q.options)
        if len(q.options) < 2:
            problems.append(f"{q.id}: needs at least two options")
        if n_correct != 1:
            problems.append(f"{q.id}: has {n_correct} correct options; exactly one is needed")
        if not texts_present(q.prompt, *(o.text for o in q.options)):
            problems.append(f"{q.id}: empty prompt or option text")
        if not texts_present(*(o.explanation for o in q.options)) or not q.options:
            problems.append(f"{q.id}: every option needs an explanation")
        if len({o.text for o in q.options}) != len(q.options):
            problems.append(f"{q.id}: two options have the same text")
        unknown = set(q.concepts) - concept_ids
        if unknown or not q.concepts:
            problems.append(f"{q.id}: unknown or missing concepts {sorted(unknown)}")
        if q.check is not None and q.check not in CHECK_NUMBERS:
            problems.append(f"{q.id}: check must be one of {CHECK_NUMBERS}")
    asked = {c for q in lesson.questions for c in q.concepts}
    for c in lesson.concepts:
        if c.id not in asked:
            problems.append(f"no question covers concept {c.number} ({c.title})")
    checked = {q.check for q in lesson.questions}
    for n in CHECK_NUMBERS:
        if n not in checked:
            problems.append(f"no question asks check {n} ({lesson.checks.get(n, '?')})")

    if len(lesson.flashcards) < MIN_FLASHCARDS:
        problems.append(f"only {len(lesson.flashcards)} flashcards; need at least {MIN_FLASHCARDS}")
    themes = {c.theme for c in lesson.flashcards}
    for theme in FLASHCARD_THEMES:
        if theme not in themes:
            problems.append(f"no flashcard has theme {theme!r}")
    for c in lesson.flashcards:
        if not texts_present(c.front, c.back):
            problems.append(f"flashcard {c.id}: empty front or back")

    if tuple(s.id for s in lesson.stages) != STAGE_IDS:
        problems.append(f"stages must be {STAGE_IDS} in that order")
    # The columns each trainer takes: raw `text`; `messages`; `prompt` / `chosen` / `rejected`.
    expected_columns = {"pretraining": {"text"}, "sft": {"messages"}, "preference": {"prompt", "chosen", "rejected"}}
    for s in lesson.stages:
        if not texts_present(s.title, s.does, s.data_format, s.trainer, s.changes, s.scale, s.stop_here):
            problems.append(f"stage {s.id}: a text field is empty")
        if not s.examples:
            problems.append(f"stage {s.id}: needs an example row")
        rows = [e.row for e in s.examples]
        if s.id in expected_columns and not any(isinstance(r, dict) and expected_columns[s.id] <= set(r) for r in rows):
            problems.append(f"stage {s.id}: needs an example row with columns {sorted(expected_columns[s.id])}")
    return problems


@functools.lru_cache(maxsize=4)
def load_lesson(data_dir: Path | str = DATA_DIR) -> Lesson:
    """Parse and validate the lesson once per process (it is immutable, so sharing it is safe)."""
    lesson = parse_lesson(data_dir)
    problems = lesson_problems(lesson)
    if problems:
        raise ValueError(f"Lesson content in {data_dir} is invalid: " + "; ".join(problems))
    logger.info(
        "Loaded the lesson: %d stages, %d questions, %d flashcards",
        len(lesson.stages),
        len(lesson.questions),
        len(lesson.flashcards),
    )
    return lesson


# --------------------------------------------------------------------------------------------------
# Quiz
# --------------------------------------------------------------------------------------------------


def new_quiz(lesson: Lesson, rng: random.Random) -> dict:
    """A fresh quiz for one visitor: question order and each question's option order shuffled."""
    questions = list(lesson.questions)
    rng.shuffle(questions)
    order = []
    for q in questions:
        option_order = list(range(len(q.options)))
        rng.shuffle(option_order)
        order.append([q.id, option_order])
    return {"order": order, "answers": {}, "position": 0}


def restore_quiz(progress: Any, lesson: Lesson, rng: random.Random) -> dict:
    """The visitor's saved progress if it still fits the current questions, else a fresh quiz.

    The browser hands back whatever it stored, possibly from an older version of the questions or
    tampered with, so nothing in it is trusted: unknown questions, bad option orders or answers mean
    starting over. Sizes are checked before anything is converted, so a huge payload costs no more
    than a valid one.
    """
    try:
        by_id = {q.id: q for q in lesson.questions}
        saved_order = progress["order"]
        if len(saved_order) != len(by_id):
            raise ValueError("questions changed")
        order = []
        for qid, options in saved_order:
            if not isinstance(qid, str) or qid not in by_id or len(options) != len(by_id[qid].options):
                raise ValueError("questions changed")
            order.append([qid, [int(i) for i in options]])
        if sorted(qid for qid, _ in order) != sorted(by_id):
            raise ValueError("questions changed")
        for qid, options in order:
            if sorted(options) != list(range(len(by_id[qid].options))):
                raise ValueError("options changed")
        saved_answers = progress.get("answers") or {}
        if len(saved_answers) > len(by_id):
            raise ValueError("more answers than questions")
        answers = {str(k): int(v) for k, v in dict(saved_answers).items()}
        answers = {k: v for k, v in answers.items() if k in by_id and 0 <= v < len(by_id[k].options)}
        position = min(max(int(progress.get("position", 0)), 0), len(order) - 1)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # int(inf) is an OverflowError
        if progress:
            logger.info("Saved quiz progress no longer fits the questions; starting a new quiz")
        return new_quiz(lesson, rng)
    return {"order": order, "answers": answers, "position": position}


@dataclass(frozen=True)
class QuizView:
    """What the screen shows for the current question."""

    position: int  # 0-based
    total: int
    question: Question
    option_order: tuple[int, ...]  # indices into question.options, in the order shown
    chosen: int | None  # index into question.options, once answered
    correct: int  # answered correctly so far
    answered: int

    @property
    def finished(self) -> bool:
        return self.answered == self.total


def quiz_view(progress: dict, lesson: Lesson) -> QuizView:
    qid, option_order = progress["order"][progress["position"]]
    answers = progress["answers"]
    correct = sum(lesson.question(k).options[v].correct for k, v in answers.items())
    return QuizView(
        position=progress["position"],
        total=len(progress["order"]),
        question=lesson.question(qid),
        option_order=tuple(option_order),
        chosen=answers.get(qid),
        correct=correct,
        answered=len(answers),
    )


def answer_question(progress: dict, lesson: Lesson, option: int | None) -> dict:
    """Record the answer to the current question; the first answer counts, so it cannot be changed."""
    if option is None or option == "":
        raise ValueError("Pick an answer first.")
    qid, _ = progress["order"][progress["position"]]
    question = lesson.question(qid)
    try:
        option = int(option)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("That answer is not one of the options.") from None
    if not 0 <= option < len(question.options):
        raise ValueError("That answer is not one of the options.")
    if qid in progress["answers"]:
        return progress
    return {**progress, "answers": {**progress["answers"], qid: option}}


def move_quiz(progress: dict, step: int) -> dict:
    """Go `step` questions forward (or back), staying inside the quiz."""
    position = min(max(progress["position"] + step, 0), len(progress["order"]) - 1)
    return {**progress, "position": position}


# --------------------------------------------------------------------------------------------------
# Flashcards (Leitner spaced repetition)
# --------------------------------------------------------------------------------------------------


def new_deck(lesson: Lesson) -> dict:
    """Every card in box 1 and due now, in the lesson's order; no card showing yet."""
    return {"cards": {c.id: {"box": 1, "due": 0.0} for c in lesson.flashcards}, "current": None, "flipped": False}


def restore_deck(deck: Any, lesson: Lesson, now: float | None = None) -> dict:
    """The visitor's saved schedule, cleaned: new cards added in box 1, removed cards dropped.

    Like the quiz, the saved deck comes from the browser and is not trusted. Only the current cards are
    looked up in it (its size costs nothing), and a due time must be a finite number; given `now`, a card
    is due no later than its box's interval from now, so a date far in the future cannot hide a card.
    """
    fresh = new_deck(lesson)
    try:
        saved = deck["cards"]
        for card_id in fresh["cards"]:
            entry = saved.get(card_id)
            if entry is not None:
                box = min(max(int(entry["box"]), 1), TOP_BOX)
                due = float(entry["due"])
                if not math.isfinite(due):
                    raise ValueError("due time is not a number")
                if now is not None:
                    due = min(due, now + LEITNER_INTERVALS_S[box])
                fresh["cards"][card_id] = {"box": box, "due": due}
        current = deck.get("current")
        fresh["current"] = current if isinstance(current, str) and current in fresh["cards"] else None
        fresh["flipped"] = bool(deck.get("flipped")) and fresh["current"] is not None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        if deck:
            logger.info("Saved flashcard schedule is unreadable; starting a new deck")
        return new_deck(lesson)
    return fresh


def next_card(deck: dict, lesson: Lesson, now: float) -> str | None:
    """The card to study now: among due cards, the longest overdue, then the lowest box, then lesson order."""
    order = {c.id: i for i, c in enumerate(lesson.flashcards)}
    due = [cid for cid, entry in deck["cards"].items() if entry["due"] <= now]
    if not due:
        return None
    return min(due, key=lambda cid: (deck["cards"][cid]["due"], deck["cards"][cid]["box"], order.get(cid, 0)))


def show_next(deck: dict, lesson: Lesson, now: float) -> dict:
    """Put the next due card (front side up) on the table, or none when everything is done for now."""
    return {**deck, "current": next_card(deck, lesson, now), "flipped": False}


def flip_card(deck: dict) -> dict:
    if deck.get("current") is None:
        raise ValueError("No card to flip: all cards are done for now.")
    return {**deck, "flipped": not deck["flipped"]}


def review_card(deck: dict, lesson: Lesson, knew_it: bool, now: float) -> dict:
    """Move the current card (up a box if you knew it, back to box 1 if not), then show the next card."""
    card_id = deck.get("current")
    if card_id is None:
        raise ValueError("No card to review: all cards are done for now.")
    entry = deck["cards"][card_id]
    box = min(entry["box"] + 1, TOP_BOX) if knew_it else 1
    # "Again" puts the card at the back of today's queue: due now, behind cards that were due earlier.
    cards = {**deck["cards"], card_id: {"box": box, "due": now + LEITNER_INTERVALS_S[box]}}
    return show_next({**deck, "cards": cards}, lesson, now)
