"""The lesson app's views: Markdown and HTML for the pipeline, the quiz, the flashcards and the grader (no gradio).

Every text that comes from the lesson's YAML or from a learner is escaped before it is shown: the lesson
talks about tokens such as <end_of_turn>, which Markdown would otherwise swallow as an unknown HTML tag.
"""

from __future__ import annotations

import html

from shared.lesson import DAY_S, LEITNER_INTERVALS_S, Lesson, QuizView, Stage
from shared.teach_back import GradeResult


def _md(text: str) -> str:
    """Markdown-safe: tokens such as <end_of_turn> must show as text, not vanish as unknown HTML tags."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ pipeline explorer


def stage_markdown(stage: Stage) -> str:
    """What a stage does, its data format and trainer, what changes in the model, and its usual scale.

    A stage's `see_it` text may hold Markdown links (to another tab of the collection), so it is not escaped.
    """
    parts = [
        f"## {_md(stage.title)}\n*{_md(stage.tagline)}*",
        f"**What it does.** {_md(stage.does)}",
        f"**Data.** {_md(stage.data_format)}.  \n**Trainer.** {_md(stage.trainer)}.",
        f"**What changes in the model.** {_md(stage.changes)}",
        f"**Typical scale.** {_md(stage.scale)}",
        f"**If you stopped here.** {_md(stage.stop_here)}",
    ]
    if stage.see_it:
        parts.append(f"**See it computed.** {stage.see_it}")
    return "\n\n".join(parts)


def stage_example_rows(stage: Stage) -> list[dict]:
    """The example rows with their labels, ready to show as JSON."""
    return [{"example": e.label, "row": e.row} for e in stage.examples]


# ------------------------------------------------------------------ quiz


def question_markdown(view: QuizView, lesson: Lesson) -> str:
    concepts = " · ".join(
        f"Concept {lesson.concept(c).number}: {lesson.concept(c).title}"
        for c in view.question.concepts
        if c != "checks"
    )
    check = f" · Check {view.question.check} of 5" if view.question.check else ""
    return (
        f"### Question {view.position + 1} of {view.total}\n*{_md(concepts)}{check}*\n\n**{_md(view.question.prompt)}**"
    )


def quiz_choices(view: QuizView) -> list[tuple[str, int]]:
    """(label, value) pairs for a radio button, in this visitor's shuffled order."""
    return [(view.question.options[i].text, i) for i in view.option_order]


def feedback_markdown(view: QuizView) -> str:
    """After answering: the verdict, then every option with its explanation (not just the right one)."""
    if view.chosen is None:
        return ""
    right = view.question.options[view.chosen].correct
    lines = ["**✅ Correct!**" if right else "**❌ Not quite.**", ""]
    for i in view.option_order:
        option = view.question.options[i]
        mark = "✅" if option.correct else ("❌" if i == view.chosen else "▫️")
        yours = " *(your answer)*" if i == view.chosen else ""
        lines.append(f"- {mark} **{_md(option.text)}**{yours}  \n  {_md(option.explanation)}")
    return "\n".join(lines)


def score_markdown(view: QuizView, progress: dict, lesson: Lesson) -> str:
    if not view.answered:
        return f"Score: 0 / 0 answered ({view.total} questions)."
    if not view.finished:
        return f"Score: {view.correct} / {view.answered} answered ({view.total - view.answered} to go)."
    missed = [lesson.question(k) for k, v in progress["answers"].items() if not lesson.question(k).options[v].correct]
    revisit = sorted({lesson.concept(c).number for q in missed for c in q.concepts if c != "checks"})
    line = f"### Final score: {view.correct} / {view.total}"
    if revisit:
        numbers = {c.number: c.title for c in lesson.concepts}
        titles = ", ".join(f"{n} ({_md(numbers[n])})" for n in revisit)
        line += f"\n\nWorth another look: concept {titles}."
    else:
        line += "\n\nEvery question right. 🎉"
    return line


# ------------------------------------------------------------------ flashcards


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < DAY_S:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / DAY_S)} days" if seconds >= 1.5 * DAY_S else "1 day"


def deck_summary_markdown(deck: dict, now: float) -> str:
    """How many cards sit in each box and how many are due, e.g. 'Box 1: 3 · Box 2: 9 ... Due now: 3'."""
    counts = {box: 0 for box in LEITNER_INTERVALS_S}
    for entry in deck["cards"].values():
        counts[entry["box"]] += 1
    due_now = sum(entry["due"] <= now for entry in deck["cards"].values())
    boxes = " · ".join(f"Box {box}: {n}" for box, n in counts.items())
    line = f"{boxes}  \nDue now: {due_now} of {len(deck['cards'])}"
    if not due_now and deck["cards"]:
        soonest = min(entry["due"] for entry in deck["cards"].values())
        line += f". All caught up. The next card is due in {_duration(soonest - now)}."
    return line


def card_html(deck: dict, lesson: Lesson) -> str:
    """The card as HTML (clicking it flips it); escaped, since cards mention tokens like <end_of_turn>."""
    card_id = deck.get("current")
    if card_id is None:
        body = "<p class='pts-card-hint'>Nothing due right now. Come back later, or reset the deck.</p>"
        return f"<div class='pts-card pts-card-empty'>{body}</div>"
    card = lesson.flashcard(card_id)
    box = deck["cards"][card_id]["box"]
    side, text = ("back", card.back) if deck["flipped"] else ("front", card.front)
    hint = "Click the card to flip it back" if deck["flipped"] else "Click the card to reveal the answer"
    return (
        f"<div class='pts-card pts-card-{side}' role='button' tabindex='0'>"
        f"<p class='pts-card-meta'>Box {box} · {side}</p>"
        f"<p class='pts-card-text'>{html.escape(text)}</p>"
        f"<p class='pts-card-hint'>{hint}</p></div>"
    )


# ------------------------------------------------------------------ teach it back


def grade_report_markdown(result: GradeResult) -> str:
    """The grade as Markdown: score, one line per concept, then what was set aside and why.

    The learner's sentences are quoted as text: "<end_of_turn>" in an answer must show, not vanish.
    """
    lines = [f"**Score: {result.score} / {result.max_score}**", ""]
    marks = {"covered": "✅", "missing": "⬜", "wrong": "❌"}
    for c in result.concepts:
        line = f"- {marks[c.status]} **{c.name}** ({c.weight} pt{'s' if c.weight > 1 else ''})"
        if c.status == "covered":
            line += f": you wrote “{_md(c.evidence)}”"
        elif c.status == "wrong":
            line += f": you wrote “{_md(c.evidence)}”. {c.feedback}"
        else:
            line += f". {c.feedback}"
        lines.append(line)
    set_aside = (
        ("Ignored (addressed to the grader, not an explanation):", result.ignored),
        ("Not read (the grader reads English only):", result.not_english),
        ("Not counted (a list of terms or too short to explain anything):", result.not_sentences),
    )
    for title, sentences in set_aside:
        if sentences:
            lines += ["", title]
            lines += [f"- “{_md(s)}”" for s in sentences]
    if result.repeats:
        lines += ["", f"{result.repeats} repeated sentence(s) counted once."]
    return "\n".join(lines)
