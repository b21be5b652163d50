"""The alignment problem, computed: log-probabilities, SFT loss and DPO's implicit reward, per token.

Both post-training steps act on one quantity, the log-probability a model gives a text. For a prompt
x and two answers (chosen y_w, rejected y_l) this module computes, for the embedded base, base + SFT
and base + SFT + DPO (one set of weights, the project's adapters routed per row):

- log π(y|x): the sum of the answer tokens' log-probabilities, and each token's own;
- the SFT loss: the mean negative log-likelihood over those same tokens (what SFT minimises);
- against the stage before (SFT vs the base; SFT+DPO vs SFT, DPO's reference), the implicit rewards
  r = β·(log π(y|x) − log π_ref(y|x)), the margin r_w − r_l, σ(margin) (the preference probability the
  model implies) and DPO's loss −log σ(margin), with β read from the DPO recipe. The shipped DPO adapter
  came in two rounds with the same β, each against the one before, so against SFT its reward is the sum of
  both rounds' rewards.

Tokenization is TRL's DPOTrainer's for conversational pairs: the prompt (one user turn) through the
Gemma 3 chat template with the generation prompt, the whole conversation through the same template,
and the answer's tokens are the conversation's tokens after their common prefix with the prompt's
(so they end with `<end_of_turn>` and the newline the template writes). tests/test_logprobs.py checks
the numbers against TRL's own DPOTrainer.

Every row (3 models × chosen/rejected) runs in one batched forward pass, right-padded as TRL pads,
with peft's per-row `adapter_names`; the output head runs only on the answer positions.

    python -m shared.logprobs --prompt "What is the capital of France?" --chosen "Paris." \\
        --rejected "What is the capital of Germany?" [--json]
    python -m shared.logprobs --preference-accuracy     # held-out pairs -> train/adapters/preference_accuracy.json

Bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.adapters import ADAPTERS_DIR, BASE_ADAPTER, MODEL_LABELS, PROJECT_ADAPTERS, project_adapter_paths
from shared.cli import OneLineParser, refuse
from shared.loading import model_lock

logger = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent
# β is the DPO recipe's, read at run time so the lens always uses the value the adapter was trained with.
DPO_RECIPE = REPO_DIR / "train" / "recipes" / "gemma-3-270m-offline" / "dpo_round2.yaml"
HELDOUT_PAIRS = REPO_DIR / "train" / "data" / "dpo_heldout.jsonl"
ACCURACY_FILE = ADAPTERS_DIR / "preference_accuracy.json"
PRESETS_FILE = Path(__file__).resolve().parent / "data" / "logprobs" / "presets.yaml"

# Each stage's reference: DPO continued the SFT adapter with a frozen copy of it as reference, and SFT
# is measured against the base it started from.
REFERENCES = {"sft": "base", "sft+dpo": "sft"}

# Input bounds, checked before any tokenizing or model work. A field of 1,000 characters is a long
# paragraph; 128 tokens per prompt or answer keeps a pair (6 rows × at most 256 tokens) to a few
# seconds of CPU, and far under the DPO recipe's max_length of 512, so nothing is ever truncated.
MAX_TEXT_CHARS = 1000
MAX_PROMPT_TOKENS = 128
MAX_ANSWER_TOKENS = 128
# Answer positions sent through the output head at once: 128 × 262,144 vocabulary × 4 bytes ≈ 134 MB
# of float32 logits, instead of every position of every row at once.
HEAD_CHUNK_POSITIONS = 128
# Held-out pairs scored per forward pass when measuring preference accuracy (× 6 rows each).
ACCURACY_PAIRS_PER_BATCH = 4
MAX_ACCURACY_PAIRS = 1000


def _relative(path: Path) -> str:
    """A path as the repository names it; never a server's absolute path."""
    try:
        return path.resolve().relative_to(REPO_DIR).as_posix()
    except ValueError:
        return path.name


def dpo_beta(recipe: Path = DPO_RECIPE) -> float:
    """β of the DPO recipe: how strongly DPO keeps the policy near its reference (rewards are scaled by it)."""
    try:
        config = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except OSError:
        raise ValueError(f"The DPO recipe {_relative(recipe)} is missing, so β is unknown.") from None
    beta = config.get("beta") if isinstance(config, dict) else None
    if not isinstance(beta, (int, float)) or not 0 < beta <= 100:
        raise ValueError(f"The DPO recipe {_relative(recipe)} has no valid beta (a positive number).")
    return float(beta)


# --------------------------------------------------------------------------------------------
# Tokenization: TRL's DPOTrainer, conversational case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTokens:
    """A preference pair as DPO sees it: the shared prompt ids, then each answer's ids."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def check_texts(prompt: str, chosen: str, rejected: str) -> None:
    """ValueError with one sentence for a missing or oversized field (cheap: characters only)."""
    for name, text in (("prompt", prompt), ("chosen answer", chosen), ("rejected answer", rejected)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The {name} is empty: type some text (or pick a preset).")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"The {name} is {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}.")


def _common_prefix_length(ids: list[int], other: list[int]) -> int:
    length = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        length += 1
    return length


@functools.lru_cache(maxsize=1)
def lens_chat_template() -> str:
    """The template DPO trained with: TRL's official Gemma 3 one (the embedded tokenizer has none)."""
    from shared.chat_templates import official_template

    return official_template("gemma3")


def tokenize_pair(tokenizer, prompt: str, chosen: str, rejected: str, chat_template: str | None = None) -> PairTokens:
    """The pair's token ids exactly as TRL's DPOTrainer builds them; ValueError when over the limits."""
    check_texts(prompt, chosen, rejected)
    template = chat_template or lens_chat_template()
    user = [{"role": "user", "content": prompt}]

    def ids(messages, **flags) -> list[int]:
        return list(
            tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True, **flags)[
                "input_ids"
            ]
        )

    prompt_ids = ids(user, add_generation_prompt=True)
    if len(prompt_ids) > MAX_PROMPT_TOKENS:
        raise ValueError(f"The prompt is {len(prompt_ids)} tokens with its template; the limit is {MAX_PROMPT_TOKENS}.")
    with_chosen = ids(user + [{"role": "assistant", "content": chosen}])
    with_rejected = ids(user + [{"role": "assistant", "content": rejected}])
    # The answer starts where the prompt alone and the conversation diverge (TRL: common_prefix_length).
    start = min(_common_prefix_length(prompt_ids, with_chosen), _common_prefix_length(prompt_ids, with_rejected))
    pair = PairTokens(prompt_ids[:start], with_chosen[start:], with_rejected[start:])
    for name, answer in (("chosen answer", pair.chosen_ids), ("rejected answer", pair.rejected_ids)):
        if len(answer) > MAX_ANSWER_TOKENS:
            raise ValueError(f"The {name} is {len(answer)} tokens; the limit is {MAX_ANSWER_TOKENS}.")
    return pair


# --------------------------------------------------------------------------------------------
# One batched forward pass: per-token log-probabilities of each row's answer
# --------------------------------------------------------------------------------------------


def _backbone(model):
    """The transformer under the output head (peft wrapper and head removed): what TRL's fused head calls."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix), inner


def answer_logprobs(model, rows: list[tuple[list[int], int]], adapter_names: list[str] | None = None):
    """Per-token log-probabilities of `ids[start:]` for each row `(ids, start)`, in one forward pass.

    Rows are right-padded (TRL's collator does the same, so positions match an unpadded pass). peft
    routes each row through `adapter_names[i]` (`BASE_ADAPTER` = none). The backbone's hidden states
    are caught on their way to the head, and the head runs only at the positions that predict an
    answer token, a chunk at a time, in float32. Returns one list of floats per row.
    """
    import torch

    if not rows:
        return []
    backbone, inner = _backbone(model)
    head = inner.get_output_embeddings()
    softcap = getattr(inner.config.get_text_config(), "final_logit_softcapping", None)
    device = next(model.parameters()).device
    pad_id = inner.config.get_text_config().pad_token_id or 0
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, start) in enumerate(rows):
        if not 1 <= start < len(ids):
            raise ValueError("Each row needs at least one prompt token and one answer token.")
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1

    caught: list = []
    me = threading.get_ident()

    def catch(module, args, output):
        if threading.get_ident() == me:  # another thread's forward on the same weights is not ours
            caught.append(output.last_hidden_state)

    kwargs = {}
    if adapter_names is not None:
        kwargs["adapter_names"] = list(adapter_names)
    handle = backbone.register_forward_hook(catch)
    try:
        with torch.inference_mode():
            # logits_to_keep = no position: the model's own head reads its 262,144 × 640 weights for
            # nothing at all; ours runs below, on the answer positions only.
            model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                use_cache=False,
                logits_to_keep=torch.zeros(0, dtype=torch.long, device=device),
                **kwargs,
            )
            (hidden,) = caught
            # Position p predicts token p + 1: row i's answer tokens ids[start:] come from start-1 .. len-2.
            row_index, positions, targets = [], [], []
            for i, (ids, start) in enumerate(rows):
                row_index += [i] * (len(ids) - start)
                positions += range(start - 1, len(ids) - 1)
                targets += ids[start:]
            states = hidden[torch.tensor(row_index, device=device), torch.tensor(positions, device=device)]
            target_ids = torch.tensor(targets, device=device)
            logps = []
            for lo in range(0, len(targets), HEAD_CHUNK_POSITIONS):
                logits = head(states[lo : lo + HEAD_CHUNK_POSITIONS]).float()
                if softcap is not None:  # Gemma 2 style final soft-capping, as the model's forward applies it
                    logits = torch.tanh(logits / softcap) * softcap
                chosen_logits = logits.gather(-1, target_ids[lo : lo + HEAD_CHUNK_POSITIONS, None]).squeeze(-1)
                logps.append(chosen_logits - torch.logsumexp(logits, dim=-1))
            flat = torch.cat(logps).tolist()
    finally:
        handle.remove()
    out, cursor = [], 0
    for ids, start in rows:
        n = len(ids) - start
        out.append(flat[cursor : cursor + n])
        cursor += n
    return out


# --------------------------------------------------------------------------------------------
# The numbers of one pair
# --------------------------------------------------------------------------------------------


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def dpo_numbers(
    chosen_logp: float, rejected_logp: float, ref_chosen_logp: float, ref_rejected_logp: float, beta: float
):
    """DPO's implicit rewards, margin, σ(margin) and loss (TRL's `sigmoid` loss) from four sequence log-probs."""
    chosen_reward = beta * (chosen_logp - ref_chosen_logp)
    rejected_reward = beta * (rejected_logp - ref_rejected_logp)
    margin = chosen_reward - rejected_reward
    return {
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": margin,
        "p_chosen": math.exp(_log_sigmoid(margin)),
        "dpo_loss": -_log_sigmoid(margin),
    }


def _token_list(tokenizer, ids: list[int], logps: list[float], ref_logps: list[float] | None) -> list[dict]:
    tokens = []
    for i, (token_id, logp) in enumerate(zip(ids, logps)):
        token = {"token": tokenizer.decode([token_id]), "id": token_id, "logp": logp}
        if ref_logps is not None:
            token["delta"] = logp - ref_logps[i]
        tokens.append(token)
    return tokens


def pair_rows(
    pair: PairTokens, logps: dict[str, tuple[list[float], list[float]]], beta: float, tokenizer
) -> list[dict]:
    """The JSON rows of one pair from each model's per-token log-probs {label: (chosen, rejected)}."""
    rows = []
    for label in MODEL_LABELS:
        if label not in logps:
            continue
        chosen, rejected = logps[label]
        reference = REFERENCES.get(label)
        ref = logps.get(reference) if reference else None
        row = {"model": label}
        if ref is not None:
            row["reference"] = reference
        row.update(
            chosen_logp=sum(chosen),
            rejected_logp=sum(rejected),
            chosen_tokens=_token_list(tokenizer, pair.chosen_ids, chosen, ref[0] if ref else None),
            rejected_tokens=_token_list(tokenizer, pair.rejected_ids, rejected, ref[1] if ref else None),
            # SFT's loss on this answer: mean NLL over exactly the tokens its assistant-only mask trains.
            chosen_sft_loss=-sum(chosen) / len(chosen),
            rejected_sft_loss=-sum(rejected) / len(rejected),
        )
        if ref is not None:
            row.update(dpo_numbers(sum(chosen), sum(rejected), sum(ref[0]), sum(ref[1]), beta))
        rows.append(row)
    return rows


def _pair_batch(pairs: list[PairTokens], labels: tuple[str, ...]):
    """Rows and adapter names for several pairs: per pair, per model, chosen then rejected."""
    rows, names = [], []
    for pair in pairs:
        start = len(pair.prompt_ids)
        for label in labels:
            for answer in (pair.chosen_ids, pair.rejected_ids):
                rows.append((pair.prompt_ids + answer, start))
                names.append(BASE_ADAPTER if label == "base" else label)
    return rows, names


def score_pairs(model, tokenizer, pairs: list[PairTokens], labels: tuple[str, ...] = MODEL_LABELS):
    """Per-token log-probs {label: (chosen, rejected)} of each pair, all rows in one forward pass."""
    rows, names = _pair_batch(pairs, labels)
    with model_lock(model):
        flat = answer_logprobs(model, rows, names if hasattr(model, "peft_config") else None)
    per_pair, cursor = [], 0
    for _ in pairs:
        scores = {}
        for label in labels:
            scores[label] = (flat[cursor], flat[cursor + 1])
            cursor += 2
        per_pair.append(scores)
    return per_pair


def score_pair(model, tokenizer, prompt: str, chosen: str, rejected: str, *, beta: float | None = None) -> dict:
    """The lens for one pair: `{"beta", "rows": [...]}` in the CLI's JSON shape (see the module docstring)."""
    beta = dpo_beta() if beta is None else beta
    pair = tokenize_pair(tokenizer, prompt, chosen, rejected)
    labels = _available_labels(model)
    (logps,) = score_pairs(model, tokenizer, [pair], labels)
    return {"beta": beta, "rows": pair_rows(pair, logps, beta, tokenizer)}


def _available_labels(model) -> tuple[str, ...]:
    present = set(getattr(model, "peft_config", {}))
    return tuple(label for label in MODEL_LABELS if label == "base" or label in present)


# --------------------------------------------------------------------------------------------
# The served model: the embedded base in float32 with the project's adapters
# --------------------------------------------------------------------------------------------


def load_lens_model(progress=None):
    """(model, tokenizer): the embedded base in float32 with the SFT and SFT+DPO adapters attached
    under their stage labels; shared with every other caller asking for the same."""
    import torch

    from shared.embedded import EMBEDDED_ID
    from shared.loading import load_base

    adapters = project_adapter_paths()
    missing = [key for key in PROJECT_ADAPTERS if key not in adapters]
    if missing:
        raise ValueError(
            f"The project's {' and '.join(missing)} adapter is not in train/adapters: train it with the recipes "
            "in train/recipes/gemma-3-270m-offline."
        )
    # float32: log-probs of long answers are sums of many small numbers; bf16 would blur the differences.
    return load_base(EMBEDDED_ID, dtype=torch.float32, adapters=adapters, progress=progress, pin=True)


@functools.lru_cache(maxsize=1)
def _embedded_tokenizer():
    from shared.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


class _ResultCache:
    """Finished results by (prompt, chosen, rejected, β, adapters): scoring is deterministic, so a
    preset clicked twice, by anyone, answers at once. Bounded; safe across request threads."""

    def __init__(self, max_entries: int = 128):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return json.loads(self._entries[key])
        return None

    def put(self, key, result: dict) -> None:
        with self._lock:
            self._entries[key] = json.dumps(result)  # a copy no caller can change
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


_RESULTS = _ResultCache()


def _result_key(prompt: str, chosen: str, rejected: str, beta: float):
    return prompt, chosen, rejected, beta, adapter_fingerprints()


def cached_result(prompt: str, chosen: str, rejected: str) -> dict | None:
    """A pair's result if it was scored before with today's β and adapters (None otherwise): never computes."""
    try:
        return _RESULTS.get(_result_key(prompt, chosen, rejected, dpo_beta()))
    except ValueError:
        return None


def score_texts(prompt: str, chosen: str, rejected: str) -> dict:
    """`score_pair` on the served lens model, with a result cache (what the app and the CLI call)."""
    from shared.compute import in_fresh_thread

    # Bounds first: characters, then tokens with the tokenizer alone, before any model is loaded.
    check_texts(prompt, chosen, rejected)
    tokenize_pair(_embedded_tokenizer(), prompt, chosen, rejected)
    beta = dpo_beta()
    key = _result_key(prompt, chosen, rejected, beta)
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached
    model, tokenizer = load_lens_model()
    # Torch work in a short-lived thread: long-lived request threads keep no OpenMP team (shared/compute.py).
    result = in_fresh_thread(score_pair, model, tokenizer, prompt, chosen, rejected, beta=beta)
    _RESULTS.put(key, result)
    return result


# --------------------------------------------------------------------------------------------
# Held-out preference accuracy
# --------------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _file_sha256(Path(path))


def adapter_fingerprints() -> tuple[tuple[str, str], ...]:
    """(stage, sha256 of its weights) for each shipped adapter: which adapters a stored number is for."""
    prints = []
    for key, adapter in PROJECT_ADAPTERS.items():
        weights = adapter.path / "adapter_model.safetensors"
        if weights.is_file():
            stat = weights.stat()
            prints.append((key, _cached_sha256(str(weights), stat.st_size, stat.st_mtime_ns)))
    return tuple(prints)


def read_pairs(path: Path = HELDOUT_PAIRS) -> list[dict]:
    """Preference pairs in train/data/dpo.jsonl's format (prompt / chosen / rejected message lists)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise ValueError(f"The preference pairs file {_relative(path)} is missing.") from None
    return [json.loads(line) for line in lines if line.strip()]


def pair_texts(row: dict) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) texts of a one-turn conversational pair."""
    try:
        (user,) = [m["content"] for m in row["prompt"] if m["role"] == "user"]
        (chosen,) = [m["content"] for m in row["chosen"] if m["role"] == "assistant"]
        (rejected,) = [m["content"] for m in row["rejected"] if m["role"] == "assistant"]
    except (KeyError, TypeError, ValueError):
        raise ValueError("A preference pair must hold one user prompt and one assistant answer on each side.") from None
    return user, chosen, rejected


def preference_accuracy(pairs: list[dict], model=None, tokenizer=None, *, beta: float | None = None) -> dict:
    """How often each model prefers the chosen answer, over `pairs` (dpo.jsonl rows).

    For SFT (reference: base) and SFT+DPO (reference: SFT): the share of pairs whose implicit reward
    margin is positive, as TRL's `rewards/accuracies` counts it, with the mean margin and a split by
    category. For every model also the share where the raw log-probability alone prefers the chosen
    answer (a length-biased measure: longer answers have lower log-probabilities).
    """
    if not pairs:
        raise ValueError("No preference pairs to measure.")
    if len(pairs) > MAX_ACCURACY_PAIRS:
        raise ValueError(f"{len(pairs)} pairs is more than the {MAX_ACCURACY_PAIRS} this measures at once.")
    from shared.compute import in_fresh_thread

    beta = dpo_beta() if beta is None else beta
    if model is None:
        model, tokenizer = load_lens_model()
    labels = _available_labels(model)
    tokenized = [tokenize_pair(tokenizer, *pair_texts(row)) for row in pairs]
    scores = []
    for lo in range(0, len(tokenized), ACCURACY_PAIRS_PER_BATCH):
        batch = tokenized[lo : lo + ACCURACY_PAIRS_PER_BATCH]
        scores += in_fresh_thread(score_pairs, model, tokenizer, batch, labels)

    models: dict[str, dict] = {}
    for label in labels:
        sums = [(sum(s[label][0]), sum(s[label][1])) for s in scores]
        entry: dict = {"logp_prefers_chosen": sum(c > r for c, r in sums) / len(sums)}
        reference = REFERENCES.get(label)
        if reference in labels:
            margins = [
                dpo_numbers(c, r, sum(s[reference][0]), sum(s[reference][1]), beta)["margin"]
                for (c, r), s in zip(sums, scores)
            ]
            by_category: dict[str, list[float]] = {}
            for row, margin in zip(pairs, margins):
                by_category.setdefault(row.get("category", "uncategorised"), []).append(margin)
            entry = {
                "reference": reference,
                "accuracy": sum(m > 0 for m in margins) / len(margins),
                "correct": sum(m > 0 for m in margins),
                "mean_margin": sum(margins) / len(margins),
                "by_category": {
                    cat: {"pairs": len(ms), "accuracy": sum(m > 0 for m in ms) / len(ms)}
                    for cat, ms in sorted(by_category.items())
                },
                **entry,
            }
        models[label] = entry
    return {"pairs": len(pairs), "beta": beta, "models": models}


def write_preference_accuracy(
    path: Path | str = ACCURACY_FILE, pairs_path: Path = HELDOUT_PAIRS, model=None, tokenizer=None
) -> dict:
    """Measure `preference_accuracy` on the held-out pairs and store it beside the adapters (JSON).

    The file records which pairs, which β and which adapter weights (sha256) it was computed for, so a
    page can tell when the adapters changed since.
    """
    path = Path(path)
    result = preference_accuracy(read_pairs(pairs_path), model, tokenizer)
    record = {
        "pairs_file": _relative(pairs_path),
        "pairs_sha256": _file_sha256(pairs_path),
        "adapters": dict(adapter_fingerprints()),
        "command": "python -m train.evaluate",
        **result,
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    logger.info("Held-out preference accuracy written to %s", _relative(path))
    return record


def read_preference_accuracy(path: Path = ACCURACY_FILE) -> dict | None:
    """The stored accuracy, with `"stale": True` when the adapters on disk are not the ones it measured
    (None when nothing is stored)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record["stale"] = record.get("adapters") != dict(adapter_fingerprints())
    return record


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    title: str
    prompt: str
    chosen: str
    rejected: str
    shows: str  # what to look for, one sentence
    heldout: bool = False


def load_presets() -> list[Preset]:
    """The teaching presets, then every held-out pair (when the held-out file is present)."""
    raw = yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))
    presets = [Preset(**item) for item in raw["presets"]]
    if HELDOUT_PAIRS.is_file():
        for row in read_pairs(HELDOUT_PAIRS):
            prompt, chosen, rejected = pair_texts(row)
            kind = row.get("rejected_kind", "").replace("_", " ")
            presets.append(
                Preset(f"Held-out: {prompt}", prompt, chosen, rejected, f"Rejected answer: {kind}.", heldout=True)
            )
    return presets


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def format_table(result: dict) -> str:
    """The result as a plain-text table (the CLI without --json)."""
    lines = [f"beta = {result['beta']:g} (from {_relative(DPO_RECIPE)})", ""]
    header = f"{'model':<8} {'ref':<5} {'log p(ch)':>10} {'log p(rej)':>10} {'SFT loss ch/rej':>16}"
    header += f" {'r(ch)':>8} {'r(rej)':>8} {'margin':>8} {'σ(m)':>6} {'DPO loss':>9}"
    lines.append(header)
    for row in result["rows"]:
        line = f"{row['model']:<8} {row.get('reference', '-'):<5}"
        line += f" {row['chosen_logp']:>10.3f} {row['rejected_logp']:>10.3f}"
        line += f" {row['chosen_sft_loss']:>7.3f} / {row['rejected_sft_loss']:<6.3f}"
        if "margin" in row:
            line += f" {row['chosen_reward']:>8.3f} {row['rejected_reward']:>8.3f} {row['margin']:>8.3f}"
            line += f" {row['p_chosen']:>6.3f} {row['dpo_loss']:>9.3f}"
        lines.append(line)
    first = result["rows"][0]
    lines.append("")
    lines.append(f"tokens: chosen {len(first['chosen_tokens'])}, rejected {len(first['rejected_tokens'])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        allow_abbrev=False,  # "--pre" must not quietly mean --preference-accuracy
        prog="python -m shared.logprobs",
        description="Log-probs, SFT loss and DPO's implicit rewards of a preference pair for base, SFT and "
        "SFT+DPO (the embedded Gemma 3 270M and the project's adapters, float32).",
    )
    parser.add_argument("--prompt", help="the user's prompt (one turn)")
    parser.add_argument("--chosen", help="the preferred answer")
    parser.add_argument("--rejected", help="the dispreferred answer")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--preference-accuracy",
        action="store_true",
        help=f"measure the held-out pairs ({_relative(HELDOUT_PAIRS)}) and write {_relative(ACCURACY_FILE)}",
    )
    args = parser.parse_args(argv)
    try:
        if args.preference_accuracy:
            if any(v is not None for v in (args.prompt, args.chosen, args.rejected)):
                raise ValueError("--preference-accuracy takes no pair")
            result = write_preference_accuracy()
        else:
            if any(v is None for v in (args.prompt, args.chosen, args.rejected)):
                raise ValueError("--prompt, --chosen and --rejected are all required")
            result = score_texts(args.prompt, args.chosen, args.rejected)
    except ValueError as exc:
        return refuse(exc)
    if args.json or args.preference_accuracy:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2) + "\n")
    else:
        sys.stdout.write(format_table(result))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
