"""Self-distillation: the base model writes the answers it will be fine-tuned on.

    python -m train.distill

reads the hand-written `train/data/sft.jsonl` and `train/data/dpo.jsonl` and writes
`train/data/sft_distilled.jsonl` and `train/data/dpo_distilled.jsonl`, the files the offline recipes train on.

Why: a base model already holds its facts; hand-written answers that disagree with what it believes
teach it to state things it does not know (confabulation), and overwrite facts it did know. So, as in
URIAL (Lin et al., 2023), the embedded base is prompted with a few in-context examples as raw text
and answers greedily:

- factual turns are asked as "Q: … A: …" text (the prompt of the evaluation's few-shot ceiling) and an
  answer is kept only when it agrees with the hand-written reference: it names the reference's facts
  and no number the reference lacks. A conversation the base gets wrong is dropped, not corrected;
- instruction, greeting, refusal and benign-but-edgy answers stay hand-written. Asked URIAL-style,
  the base's instruction answers were often no answer at all ("The code is wrong."), and these rows
  teach a format (a poem, a list, a rewrite) rather than facts; the base has no refusals to give; and
  plain helpful replies to greetings keep plain prompts from being refused.

For the DPO pairs, a factual `chosen` answer becomes the base's own when it agrees with the reference;
a pair whose fact the base gets wrong is dropped. Greedy decoding makes the output deterministic
for a given base checkpoint and library versions.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path

from shared.cli import OneLineParser, refuse
from shared.generation import GenerationSettings, generate_batch
from train.common import DATA_DIR, EMBEDDED_MODEL
from train.evaluate import FEW_SHOT_EXAMPLES, first_line, is_echo, is_refusal, load_variants, newline_stop_ids

logger = logging.getLogger(__name__)

# A few-shot answer is one sentence: well inside the 120-token cap on training answers (tests/test_train_data.py).
MAX_NEW_TOKENS = 48
MAX_ANSWER_WORDS = 60
# A training answer is a sentence that restates the question ("The capital of Kenya is Nairobi."), not a
# bare name ("Nairobi."): adapters trained on bare answers answered dev questions bare and wrong ("The stem.",
# "180 degrees.") where the base, restating the question few-shot, retrieves the right fact. A bare answer
# that agrees with the reference shows the base holds the fact; the reference's sentence then carries it.
MIN_ANSWER_WORDS = 4

_STOP_WORDS = set(
    "a an the is are was were be been of in on at to for from by with and or as it its this that these those "
    "there their they them he she his her you your i we our what which who whom whose when where why how "
    "do does did has have had not no yes about than then also can could would should may might will just "
    "called known named one".split()
)


def _content_words(text: str) -> list[str]:
    # One-letter words ("°C" -> "c", "x") carry no fact on their own.
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP_WORDS and (len(w) > 1 or w.isdigit())]


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _stem(word: str) -> str:
    return word[:5]


def agrees_with_reference(prompt: str, answer: str, reference: str) -> bool:
    """Does `answer` state the reference's fact, and nothing the reference contradicts?

    The answer's own content (its words minus the question's) must be at least 3/4 in the reference's first
    sentence (which states the fact; later ones may name the usual wrong answer, "Istanbul is the largest
    city"); when the reference gives a number the question does not, the answer must give one of them; and
    every number the answer gives must appear in the reference: a confident wrong fact fails one of these.
    Paraphrases sometimes fail too, which only drops a row.
    """
    asked = {_stem(w) for w in _content_words(prompt)}
    said = [_stem(w) for w in _content_words(answer) if _stem(w) not in asked]
    known = {_stem(w) for w in _content_words(_first_sentence(reference))}
    if not said or sum(w in known for w in said) * 4 < 3 * len(said):
        return False
    if _names_the_subject_as_its_answer(asked, answer, reference):
        return False
    new_numbers = _numbers(reference) - _numbers(prompt)
    if new_numbers and not new_numbers & _numbers(answer):
        return False
    return _numbers(answer) <= _numbers(reference)


def _first_sentence(text: str) -> str:
    return _FIRST_SENTENCE.split(text.strip(), 1)[0]


def _names_the_subject_as_its_answer(asked: set[str], answer: str, reference: str) -> bool:
    """ "Switzerland is the capital of Switzerland": a word of the question (`asked`, stemmed) said twice where
    the reference says it once is the question's subject put in the answer's place (words the reference
    repeats are fine)."""
    said = Counter(_stem(w) for w in _content_words(answer))
    known = Counter(_stem(w) for w in _content_words(reference))
    return any(said[w] >= 2 and known[w] < 2 for w in asked)


def clean_answer(prompt: str, answer: str | None) -> str | None:
    """The answer if it is usable as a training target (one clean line, no echo, no refusal), else None."""
    answer = (answer or "").strip()
    if not answer or len(answer.split()) > MAX_ANSWER_WORDS:
        return None
    if is_echo(prompt, answer) or is_refusal(answer) or "Q:" in answer:
        return None
    return answer


def training_answer(question: str, answer: str | None, reference: str) -> str | None:
    """What to train on for a factual turn: the base's own answer when it is clean and agrees with the
    reference; the reference's first sentence when the base agreed in a bare word or two; else None."""
    answer = clean_answer(question, answer)
    if answer is None or not agrees_with_reference(question, answer, reference):
        return None
    if len(answer.split()) < MIN_ANSWER_WORDS:
        return _first_sentence(reference)
    return answer


def factual_prompt(turns: list[tuple[str, str]], question: str) -> str:
    """Few-shot Q/A text; earlier turns of the conversation come right before the question."""
    shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in FEW_SHOT_EXAMPLES)
    history = "".join(f"Q: {' '.join(q.split())}\nA: {' '.join(a.split())}\n\n" for q, a in turns)
    return f"{shots}{history}Q: {' '.join(question.split())}\nA:"


class Distiller:
    """The embedded base, asked as raw few-shot text, many questions per batched call."""

    def __init__(self, model_name: str = EMBEDDED_MODEL, batch_size: int = 16, *, model=None, tokenizer=None):
        # A caller that already holds the base (with adapters attached) passes it in; the base answers alone.
        if model is None:
            model, tokenizer, _ = load_variants({}, model_name)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.stops = newline_stop_ids(self.tokenizer)

    def answer(self, texts: list[str]) -> list[str | None]:
        """The line the base writes after each text; None where it ran out of tokens mid-line."""
        if not texts:
            return []
        logger.info("Asking the base %d questions few-shot", len(texts))
        outputs = generate_batch(
            self.model,
            self.tokenizer,
            [self.tokenizer(t)["input_ids"] for t in texts],
            stop_ids=self.stops,
            settings=GenerationSettings(max_new_tokens=MAX_NEW_TOKENS),
            adapters=[None] * len(texts),
            batch_size=self.batch_size,
        )
        return [first_line(out.text) if out.stopped else None for out in outputs]


def _turns(messages: list[dict]) -> tuple[str | None, list[tuple[str, str]]]:
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rest = messages[1:] if system else messages
    return system, [(rest[i]["content"], rest[i + 1]["content"]) for i in range(0, len(rest), 2)]


def distill_conversations(rows: list[dict], distiller: Distiller) -> tuple[list[dict], Counter]:
    """Factual conversations re-answered by the base, turn by turn; a conversation it gets wrong is dropped."""
    shots = {q for q, _ in FEW_SHOT_EXAMPLES}
    stats: Counter = Counter()
    work: dict[int, list[tuple[str, str]]] = {}
    for i, row in enumerate(rows):
        system, turns = _turns(row["messages"])
        if row["category"] != "factual" or system or turns[0][0] in shots:
            stats[f"{row['category']}: hand-written"] += 1
        else:
            work[i] = turns
    distilled: dict[int, list[tuple[str, str]]] = {i: [] for i in work}
    alive = set(work)
    for turn in range(max((len(t) for t in work.values()), default=0)):
        batch = [i for i in sorted(alive) if len(work[i]) > turn]
        answers = distiller.answer([factual_prompt(distilled[i], work[i][turn][0]) for i in batch])
        for i, answer in zip(batch, answers):
            question, reference = work[i][turn]
            answer = training_answer(question, answer, reference)
            if answer is None:
                alive.discard(i)
            else:
                distilled[i].append((question, answer))
    out = []
    for i, row in enumerate(rows):
        if i not in work:
            out.append(row)
        elif i in alive:
            messages = []
            for question, answer in distilled[i]:
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            out.append({**row, "messages": messages, "source": "base, few-shot"})
            stats["factual: distilled"] += 1
        else:  # the base does not hold this fact: teaching it would teach confabulation
            stats["factual: dropped (base disagrees)"] += 1
    return out, stats


# DPO favours longer answers when the chosen ones are longer (Park et al., 2024, "Disentangling Length from
# Quality in DPO"); a rejected answer longer than this many times its chosen one is cut at a word.
MAX_LENGTH_RATIO = 1.5


def balance_length(chosen: str, rejected: str) -> str:
    """`rejected` cut to at most MAX_LENGTH_RATIO times the words of `chosen` (never below 8 words), so a
    pair teaches which answer is better, not which is shorter or longer."""
    limit = max(8, round(MAX_LENGTH_RATIO * len(chosen.split())))
    ends = [m.end() for m in re.finditer(r"\S+", rejected)]
    return rejected if len(ends) <= limit else rejected[: ends[limit - 1]].rstrip(",;:")


def distill_pairs(rows: list[dict], distiller: Distiller) -> tuple[list[dict], Counter]:
    """`distill_chosen`, then every rejected answer length-balanced against its (final) chosen one."""
    out, stats = distill_chosen(rows, distiller)
    return [_balanced(row) for row in out], stats


def distill_chosen(rows: list[dict], distiller: Distiller) -> tuple[list[dict], Counter]:
    """Factual `chosen` answers become the base's own where it agrees with the reference; a row whose fact the
    base gets wrong is dropped; other rows stay (pairs here, and `train/on_policy.py`'s prompts)."""
    stats: Counter = Counter()
    factual = [i for i, row in enumerate(rows) if row["category"] == "factual" and len(row["prompt"]) == 1]
    questions = [rows[i]["prompt"][0]["content"] for i in factual]
    answers = dict(zip(factual, distiller.answer([factual_prompt([], q) for q in questions])))
    out = []
    for i, row in enumerate(rows):
        if i not in answers:
            out.append(row)
            stats[f"{row['category']}: hand-written"] += 1
            continue
        question, reference = row["prompt"][0]["content"], row["chosen"][0]["content"]
        answer = training_answer(question, answers[i], reference)
        if answer is None:
            stats["factual: dropped (base disagrees)"] += 1
            continue
        out.append({**row, "chosen": [{"role": "assistant", "content": answer}], "source": "base, few-shot"})
        stats["factual: distilled"] += 1
    return out, stats


def _balanced(row: dict) -> dict:
    chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
    return {**row, "rejected": [{"role": "assistant", "content": balance_length(chosen, rejected)}]}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description="Let the base model write its own SFT and DPO answers.")
    parser.add_argument("--sft", default=str(DATA_DIR / "sft.jsonl"), help="Hand-written conversations.")
    parser.add_argument("--dpo", default=str(DATA_DIR / "dpo.jsonl"), help="Hand-written preference pairs.")
    parser.add_argument("--sft_out", default=str(DATA_DIR / "sft_distilled.jsonl"))
    parser.add_argument("--dpo_out", default=str(DATA_DIR / "dpo_distilled.jsonl"))
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="The base model that writes the answers.")
    parser.add_argument("--stage", choices=["sft", "dpo", "both"], default="both", help="Which file(s) to write.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sft_rows, dpo_rows = _read(Path(args.sft)), _read(Path(args.dpo))
    except (OSError, ValueError) as exc:
        return refuse(exc)
    distiller = Distiller(args.model)
    jobs = {"sft": (distill_conversations, sft_rows, args.sft_out), "dpo": (distill_pairs, dpo_rows, args.dpo_out)}
    for name, (distill, rows, target) in jobs.items():
        if args.stage in (name, "both"):
            out, stats = distill(rows, distiller)
            _write(Path(target), out)
            logger.info("%s: %d of %d rows kept; %s", target, len(out), len(rows), dict(sorted(stats.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
