"""On-policy preference pairs: the SFT model's own failures become the rejected answers DPO trains against.

    python -m train.on_policy

asks the SFT adapter (`train/adapters/gemma-3-270m-sft`) every prompt of `train/data/dpo_distilled.jsonl`
and `train/data/dpo_prompts.jsonl` through the chat template, once greedily and `--samples` times sampled,
and writes `train/data/dpo_on_policy.jsonl`, the file the offline DPO recipe trains on: every pair of
`dpo_distilled.jsonl`, plus a pair for each way the SFT model really fails a prompt:

- a plain or benign-but-edgy prompt answered with a refusal ("I can't help with fireworks, but …"):
  `needless_refusal`;
- a factual question whose fact the base holds (its few-shot answer agrees with the reference) answered
  with a different fact ("Abraham Lincoln was the first president …"): `wrong_fact`; the chosen answer
  is the base's own sentence, so DPO pulls the adapter back to what the base knew;
- an answer that repeats the question or never stops: `echo` / `continues_text`;
- a harmful prompt not refused cleanly: `complies_with_harm` / `refuse_then_comply`, the rejected answer cut
  to its first words (what DPO must push down is the opening; no harmful detail is stored).

Why: hand-written rejected answers are what someone guessed the model might say; the SFT model's actual
mistakes are what DPO has to move, and preference fine-tuning on the policy's own samples corrects them
where off-policy pairs miss (Tajwar et al., 2024, "Preference Fine-Tuning of LLMs Should Leverage
Suboptimal, On-Policy Data"). Sampling finds failures that greedy decoding only just avoids. Every rejected
answer is length-balanced against its chosen one as in `train/distill.py`. Seeds are fixed, so the file is
reproducible for a given adapter and library versions.

A second round (iterative DPO) asks the round-1 DPO adapter instead, on new prompts and on round 1's harmful
prompts again, keeps only its own failures, and balances harmful-prompt pairs against needless refusals
(recipe `dpo_round2.yaml` has the command):

    python -m train.on_policy --adapter train/runs/gemma-3-270m-sft-dpo-round1 \
        --pairs train/data/dpo_on_policy.jsonl --categories refusal --ask_only --balance \
        --prompts train/data/dpo_prompts_r2.jsonl --out train/data/dpo_round2.jsonl

Prompt rows that share a `topic` are siblings: a benign question and a harmful request on one subject. Besides
the policy's own failures on them, each topic gives two contrastive pairs (`sibling_pairs`), whatever the
policy answered. The round-3 experiment (`dpo_round3.yaml`, not shipped) is built from such prompts.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from pathlib import Path

from shared.cli import OneLineParser, refuse
from shared.generation import GenerationSettings
from train.common import DATA_DIR, EMBEDDED_MODEL, REPO_DIR
from train.distill import (
    Distiller,
    _content_words,
    _first_sentence,
    _numbers,
    _read,
    _stem,
    _write,
    balance_length,
    distill_chosen,
)
from train.evaluate import (
    MAX_NEW_TOKENS,
    adapter_stage,
    generate_answers,
    is_echo,
    is_refusal,
    load_variants,
    refuses_cleanly,
    refuses_then_complies,
)

logger = logging.getLogger(__name__)

SFT_LABEL = "sft"
# Sampled answers per prompt, beside the greedy one: three tries see most failures the model makes one time
# in three, at three times the generation cost of greedy alone.
DEFAULT_SAMPLES = 2
SAMPLING = {"temperature": 1.0, "top_p": 0.95}
# Distinct failing answers kept per prompt: a second one teaches a second phrasing of the same mistake;
# more would let one prompt outweigh the others.
MAX_PAIRS_PER_PROMPT = 2
# A harmful answer is stored only up to its first words: the opening is what DPO must push down.
HARM_WORDS = 12


_NUMBER_WORDS = dict(
    zip(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand".split(),
        [*map(str, range(21)), *map(str, range(30, 100, 10)), "100", "1000"],
    )
)


def _digits(text: str) -> str:
    """Number words as digits ("three sides" -> "3 sides"), so "It has 3 sides." states the reference's fact."""
    return re.sub(r"[A-Za-z]+", lambda m: _NUMBER_WORDS.get(m.group().lower(), m.group()), text)


def states_another_fact(question: str, answer: str, reference: str) -> bool:
    """Does `answer` give a fact other than the reference's? Stricter than `agrees_with_reference` failing:
    a right answer in other words must not become a rejected one.

    Wrong when the reference's number (one the question does not give) is missing or another number is
    given, or when the answer names none of the reference's own words (those the question does not say):
    "Abraham Lincoln was the first president" for "George Washington was …".
    """
    question, answer, reference = _digits(question), _digits(answer), _digits(_first_sentence(reference))
    new_numbers = _numbers(reference) - _numbers(question)
    if new_numbers:
        return not new_numbers & _numbers(answer) or bool(_numbers(answer) - _numbers(reference) - _numbers(question))
    asked = {_stem(w) for w in _content_words(question)}
    fact = {_stem(w) for w in _content_words(reference)} - asked
    said = {_stem(w) for w in _content_words(answer)}
    return bool(fact) and not fact & said


def failure(row: dict, answer: str, stopped: bool) -> str | None:
    """The `rejected_kind` this answer shows for this prompt, or None when it is a fine answer."""
    question, chosen = row["prompt"][-1]["content"], row["chosen"][0]["content"]
    if row["category"] == "refusal":
        if refuses_cleanly(answer):
            return None
        return "refuse_then_comply" if refuses_then_complies(answer) else "complies_with_harm"
    if is_refusal(answer):
        return "needless_refusal"
    if not stopped:
        return "continues_text"
    if is_echo(question, answer):
        return "echo"
    if row["category"] == "factual" and states_another_fact(question, answer, chosen):
        return "wrong_fact"
    return None


def opening(answer: str, words: int = HARM_WORDS) -> str:
    """The first `words` words of a harmful answer, or through the start of its compliance if that comes later
    (a refusal that complies after word 12 would otherwise be cut back into a clean refusal)."""
    ends = [m.end() for m in re.finditer(r"\S+", answer)]
    cut = ends[min(words, len(ends)) - 1] if ends else 0
    if refuses_then_complies(answer) and refuses_cleanly(answer[:cut]):
        cut = next((end for end in ends if end > cut and not refuses_cleanly(answer[:end])), cut)
    return answer[:cut].rstrip(",;:") + ("…" if cut < len(answer.rstrip()) else "")


def rejected_answer(row: dict, answer: str, kind: str) -> str | None:
    """What the pair stores as rejected: cut harmful openings short, balance the rest against the chosen one;
    None when the cut answer no longer shows the failure."""
    if kind in ("complies_with_harm", "refuse_then_comply"):
        text = opening(answer)
        return None if refuses_cleanly(text) else text
    text = balance_length(row["chosen"][0]["content"], answer)
    if kind == "needless_refusal" and not is_refusal(text):
        return None
    return text


def pairs_from_answers(rows: list[dict], answers: list[list[tuple[str, bool]]], policy: str = "sft") -> list[dict]:
    """One pair per distinct failing answer (greedy first), at most MAX_PAIRS_PER_PROMPT per prompt;
    `policy` names the model that gave the answers ("sft", or "sft+dpo" in a second round)."""
    out = []
    for row, tries in zip(rows, answers):
        seen: set[str] = set()
        for text, stopped in tries:
            kind = failure(row, text, stopped)
            rejected = rejected_answer(row, text, kind) if kind else None
            if rejected is None or rejected in seen or len(seen) >= MAX_PAIRS_PER_PROMPT:
                continue
            seen.add(rejected)
            out.append(preference_pair(row, rejected, kind, f"{policy}, on-policy"))
    return out


def preference_pair(row: dict, rejected: str, kind: str, source: str) -> dict:
    """A pair in TRL's conversational preference format: the row's prompt and chosen answer against `rejected`."""
    return {
        "prompt": row["prompt"],
        "chosen": row["chosen"],
        "rejected": [{"role": "assistant", "content": rejected}],
        "category": row["category"],
        "rejected_kind": kind,
        "source": source,
    }


def kind_counts(pairs: list[dict]) -> Counter:
    """Pairs per "category: rejected_kind", as the log reports them."""
    return Counter(f"{p['category']}: {p['rejected_kind']}" for p in pairs)


def balance_refusals(pairs: list[dict]) -> list[dict]:
    """At most as many pairs from harmful prompts as needless-refusal pairs, keeping each harmful prompt's
    first pair before any prompt's second. Why: each kind pushes the other way (refuse more / refuse less),
    and a round whose policy fails harmful prompts more often than benign ones otherwise teaches it to
    refuse benign ones again (dev: 100 harmful against 64 needless-refusal pairs took edgy refusals from
    17 % to 42 %)."""
    needless = sum(p["rejected_kind"] == "needless_refusal" for p in pairs)
    seen: Counter = Counter()
    ranked = []
    for i, pair in enumerate(pairs):
        if pair["category"] == "refusal":
            prompt = pair["prompt"][-1]["content"]
            ranked.append((seen[prompt], i))
            seen[prompt] += 1
    dropped = {i for _, i in sorted(ranked)[needless:]}
    return [pair for i, pair in enumerate(pairs) if i not in dropped]


def sibling_pairs(rows: list[dict]) -> list[dict]:
    """Contrastive pairs from prompt rows that share a `topic`: a benign question and a harmful request on the
    same subject, in the same words. The harmful prompt prefers its refusal to the benign sibling's help (cut
    to its opening, as a harmful answer is); the benign prompt prefers its help to the harmful sibling's
    refusal. Why: a policy that refuses by topic word ("lock", "poison") refuses both or neither; only a
    pair that differs in intent alone teaches it that intent decides. Each topic gives one pair of each kind.
    Equal in number, they are not equal in force: the sibling's refusal is a likely answer of a policy that
    over-refuses, the sibling's help an unlikely one, so on the round-3 experiment they lowered refusals of
    both kinds (README)."""
    by_topic: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row.get("topic"):
            side = "harmful" if row["category"] == "refusal" else "benign"
            sides = by_topic.setdefault(row["topic"], {})
            if side in sides:  # a second row would silently replace the first
                raise ValueError(f"topic {row['topic']!r} has two {side} rows; a topic pairs one of each.")
            sides[side] = row
    out = []
    for topic, sides in by_topic.items():
        if set(sides) != {"harmful", "benign"}:
            raise ValueError(f"topic {topic!r} needs one benign row and one refusal row, got {sorted(sides)}.")
        harmful, benign = sides["harmful"], sides["benign"]
        help_text, refusal = benign["chosen"][0]["content"], harmful["chosen"][0]["content"]
        source = f"contrastive, topic {topic}"
        out.append(preference_pair(harmful, opening(help_text), "complies_with_harm", source))
        out.append(preference_pair(benign, balance_length(help_text, refusal), "needless_refusal", source))
    return out


def policy_answers(
    model, tokenizer, template, rows: list[dict], samples: int, label: str = SFT_LABEL
) -> list[list[tuple[str, bool]]]:
    """(text, stopped) per row from the adapter under `label`: the greedy answer first, then `samples` sampled
    ones (seeds 1..samples)."""
    prompts = [{"prompt": row["prompt"][-1]["content"]} for row in rows]
    sampled = [GenerationSettings(MAX_NEW_TOKENS, do_sample=True, seed=s, **SAMPLING) for s in range(1, samples + 1)]
    per_row: list[list[tuple[str, bool]]] = [[] for _ in rows]
    for setting in [GenerationSettings(max_new_tokens=MAX_NEW_TOKENS), *sampled]:
        logger.info("%s answers to %d prompts (%s)", label, len(rows), "sampled" if setting.do_sample else "greedy")
        answers = generate_answers(model, tokenizer, template, prompts, label, settings=setting)
        for tries, answer in zip(per_row, answers):
            tries.append((answer.text, answer.stopped))
    return per_row


def policy_label(adapter: str) -> str:
    """ "sft" for an SFT adapter, "sft+dpo" for one `train/dpo.py` made (a second on-policy round)."""
    return "sft+dpo" if adapter_stage(adapter)["stage"] == "dpo" else SFT_LABEL


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description="Turn an adapter's own failures into DPO preference pairs.")
    parser.add_argument(
        "--adapter",
        "--sft_adapter",
        dest="adapter",
        default=str(REPO_DIR / "train/adapters/gemma-3-270m-sft"),
        help="The policy whose answers are judged: the SFT adapter, or a DPO adapter for a second round.",
    )
    parser.add_argument(
        "--pairs", nargs="*", default=[str(DATA_DIR / "dpo_distilled.jsonl")], help="Pairs to keep and ask."
    )
    parser.add_argument("--categories", nargs="*", default=None, help="Take only the pairs of these categories.")
    parser.add_argument(
        "--ask_only", action="store_true", help="Ask the pairs' prompts again without copying the pairs to --out."
    )
    parser.add_argument(
        "--prompts", nargs="*", default=[str(DATA_DIR / "dpo_prompts.jsonl")], help="Prompts with chosen answers."
    )
    parser.add_argument(
        "--balance",
        action="store_true",
        help="Keep no more pairs from harmful prompts than needless-refusal pairs (see balance_refusals).",
    )
    parser.add_argument("--out", default=str(DATA_DIR / "dpo_on_policy.jsonl"))
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="Sampled answers per prompt (0-8).")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="The base model the adapter was trained on.")
    args = parser.parse_args(argv)
    if not 0 <= args.samples <= 8:
        return refuse(ValueError("--samples must be between 0 and 8."))
    if not (Path(args.adapter) / "adapter_config.json").is_file():
        return refuse(ValueError(f"{args.adapter} is not an adapter folder: train it with train/sft.py first."))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        policy = policy_label(args.adapter)
        pairs = [row for path in args.pairs for row in _read(Path(path))]
        prompts = [row for path in args.prompts for row in _read(Path(path))]
        siblings = sibling_pairs(prompts)  # a lone sibling is refused before any generation, not after
    except (OSError, ValueError) as exc:
        return refuse(exc)
    if args.categories is not None:
        pairs = [row for row in pairs if row["category"] in args.categories]
    model, tokenizer, template = load_variants({policy: args.adapter}, args.model)
    prompts, stats = distill_chosen(prompts, Distiller(model=model, tokenizer=tokenizer))
    # One row per prompt text: a hand-written file may pair the same prompt twice.
    rows = list({row["prompt"][-1]["content"]: row for row in pairs + prompts if len(row["prompt"]) == 1}.values())
    answers = policy_answers(model, tokenizer, template, rows, args.samples, policy)
    found = pairs_from_answers(rows, answers, policy)
    if args.balance:
        found = balance_refusals(found)
    # Sibling pairs come after balancing: they are one harmful and one benign pair per topic already.
    found += siblings
    found_stats = kind_counts(found)
    kept = [] if args.ask_only else pairs
    _write(Path(args.out), kept + found)
    logger.info(
        "%s: %d pairs (%d kept, %d on-policy from %d prompts, %d contrastive); %s",
        args.out,
        len(kept) + len(found),
        len(kept),
        len(found) - len(siblings),
        len(rows),
        len(siblings),
        dict(sorted((stats + found_stats).items())),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
