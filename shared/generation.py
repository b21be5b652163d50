"""Side-by-side streaming generation: several columns, one prompt, each column's own view of it.

Columns that share weights (the base and the aligned column when both are the embedded model, or
one base with several adapters) are generated together in **one batched `generate` call**, left-
padded, so two columns cost about as much as one. Columns on different models run at the same time
in their own threads. Every step is streamed back per column, together with the probability the
model gave its end-of-turn token at that step: the stop sign being learned, visible.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from shared.adapters import BASE_ADAPTER
from shared.loading import ServedModel, model_lock

logger = logging.getLogger(__name__)

# Prompts longer than this are refused: the lesson's prompts are a sentence or two, and a long
# prompt on a CPU would hold the queue for everyone else.
MAX_PROMPT_TOKENS = 512
# Upper bound for max_new_tokens, whatever the UI or API asks for (~40 s per column on a laptop CPU).
MAX_NEW_TOKENS_CAP = 512
TOP_K_NEXT = 5

STOP_END_OF_TURN = "end-of-turn token"
STOP_EOS = "EOS token"
STOP_LENGTH = "hit the token limit"
STOP_CANCELLED = "cancelled"


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 96
    do_sample: bool = False  # greedy by default: fair between columns and reproducible
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0

    def validated(self) -> "GenerationSettings":
        if not 1 <= int(self.max_new_tokens) <= MAX_NEW_TOKENS_CAP:
            raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_CAP}.")
        if self.do_sample and not 0.0 < float(self.temperature) <= 5.0:
            raise ValueError("Temperature must be above 0 and at most 5.")
        if self.do_sample and not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError("top-p must be above 0 and at most 1.")
        return self


@dataclass(frozen=True)
class Column:
    """What one column shows: a served model and whether the prompt goes through its chat template."""

    label: str
    served: ServedModel
    use_chat_template: bool


@dataclass
class ColumnResult:
    """Everything a column displays; updated in place while it streams."""

    label: str
    input_ids: list[int] = field(default_factory=list)
    input_text: str = ""
    generated_ids: list[int] = field(default_factory=list)
    text: str = ""
    stop_reason: str | None = None
    stop_token: str | None = None
    elapsed_s: float = 0.0
    top_next: list[tuple[str, float]] = field(default_factory=list)  # (token, probability) at step 0
    end_of_turn_probs: list[float] = field(default_factory=list)  # p(end-of-turn) at each step
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.stop_reason is not None or self.error is not None

    @property
    def tokens_per_s(self) -> float:
        return len(self.generated_ids) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _plain(text: str) -> str:
    return " ".join(text.split())


def build_input_ids(column: Column, prompt: str) -> list[int]:
    """The exact token ids a column's model receives for `prompt`.

    Base column: the raw prompt with the tokenizer's usual BOS, exactly as pretraining text looked.
    Aligned column: the chat template with a generation prompt, tokenized *without* adding special
    tokens again (the template already wrote `<bos>`; adding another is a classic silent bug).
    """
    if not prompt or not prompt.strip():
        raise ValueError("Type a prompt (or pick a preset) first.")
    tokenizer = column.served.tokenizer
    if column.use_chat_template:
        # A template that came with the model renders only in the sandboxed child (ServedModel.render_chat).
        text = column.served.render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    if len(ids) > MAX_PROMPT_TOKENS:
        raise ValueError(
            f"The prompt is {len(ids)} tokens for {column.label}; the limit is {MAX_PROMPT_TOKENS} tokens. "
            "Shorten it and try again."
        )
    return ids


def stop_token_ids(served: ServedModel) -> dict[int, str]:
    """Token id -> stop reason: the end-of-turn token of the chat template, and the tokenizer's EOS."""
    tokenizer = served.tokenizer
    stops = {}
    if tokenizer.eos_token_id is not None:
        stops[tokenizer.eos_token_id] = STOP_EOS
    if served.end_of_turn:
        eot_id = tokenizer.convert_tokens_to_ids(served.end_of_turn)
        if eot_id is not None and eot_id != tokenizer.unk_token_id:
            stops[eot_id] = STOP_END_OF_TURN
    return stops


# --------------------------------------------------------------------------------------------
# Hooks into `generate`: one per batched call
# --------------------------------------------------------------------------------------------


class _StepRecorder(LogitsProcessor):
    """Reads each step's logits (before temperature/top-p, which transformers applies after custom
    processors) and records p(end-of-turn) per row, plus the top-k next tokens at the first step."""

    def __init__(self, end_of_turn_ids: list[int | None], top_k: int):
        self.end_of_turn_ids = end_of_turn_ids
        self.top_k = top_k
        self.step = 0
        self.first_top: list[list[tuple[int, float]]] = []
        self.last_eot_probs: list[float | None] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # p(token) = exp(logit - logsumexp(logits)): one pass over the vocabulary (262k for Gemma)
        # instead of materialising a full softmax every step.
        log_norm = torch.logsumexp(scores.float(), dim=-1)
        if self.step == 0:
            top = torch.topk(scores, self.top_k, dim=-1)
            top_probs = torch.exp(top.values.float() - log_norm[:, None])
            self.first_top = [
                list(zip(row_ids.tolist(), row_p.tolist())) for row_ids, row_p in zip(top.indices, top_probs)
            ]
        self.last_eot_probs = [
            float(torch.exp(scores[row, eot].float() - log_norm[row])) if eot is not None else None
            for row, eot in enumerate(self.end_of_turn_ids)
        ]
        self.step += 1
        return scores


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _RetireFinishedRows(StoppingCriteria):
    """Routes a row through no adapter once it has stopped; never stops anything itself.

    `generate` keeps computing finished rows (as padding) until the last row ends, and for a row
    with an adapter peft runs every LoRA layer on it too. peft's hooks read the very `adapter_names`
    list passed to `generate`, so renaming a finished row to "__base__" drops that work: on the
    benchmark prompt the SFT columns stop after 7 and 15 of 64 steps, and the 4-column batch takes
    ~0.7 s less. A finished row's later tokens are discarded, so its output cannot change.
    """

    def __init__(self, adapter_names: list[str], stop_ids: list[int]):
        self.adapter_names = adapter_names
        self.stop_ids = torch.tensor(stop_ids)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        finished = torch.isin(input_ids[:, -1], self.stop_ids.to(input_ids.device))
        for row in finished.nonzero().flatten().tolist():
            self.adapter_names[row] = BASE_ADAPTER
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _StepStreamer(BaseStreamer):
    """Receives each step's new tokens (one per row) from `generate` and forwards them with the
    recorder's probabilities to the consumer's queue."""

    def __init__(self, group: int, recorder: _StepRecorder, events: queue.Queue):
        self.group = group
        self.recorder = recorder
        self.events = events
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt itself
            self.prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        self.events.put(("step", self.group, tokens, self.recorder.first_top, self.recorder.last_eot_probs))

    def end(self) -> None:
        self.events.put(("end", self.group, None, None, None))


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids as one left-padded batch (ids, attention mask): every row ends at the last column,
    so one `generate` step appends each row's next token right after its own prompt."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, width - len(ids) :] = 1
    return input_ids, attention_mask


def _generate_kwargs(model, rows, adapter_names, stop_ids, pad_id, settings: GenerationSettings) -> dict:
    """The `generate` arguments every batched call shares: left padding, stop ids, decoding settings,
    and, on a peft model, one adapter per row with finished rows retired from their adapter."""
    input_ids, attention_mask = _left_pad(rows, pad_id)
    device = next(model.parameters()).device
    kwargs = dict(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad_id,
        stopping_criteria=StoppingCriteriaList(),
    )
    if hasattr(model, "peft_config"):
        # One base, several adapters: peft routes each row through its own ("__base__" = none).
        names = [name or BASE_ADAPTER for name in adapter_names]
        kwargs["adapter_names"] = names
        if any(name != BASE_ADAPTER for name in names):
            kwargs["stopping_criteria"].append(_RetireFinishedRows(names, sorted(stop_ids)))
    elif any(name and name != BASE_ADAPTER for name in adapter_names):
        raise ValueError("Adapter rows need a model with adapters attached.")
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        torch.manual_seed(settings.seed)
    else:
        # Greedy: clear sampling knobs a checkpoint's generation_config may carry (Gemma's -it sets them).
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _run_group(group, columns, rows, stop_maps, settings, events, cancel):
    """Generate all `rows` (indices into `columns`) of one model in a single left-padded batch."""
    try:
        served = columns[rows[0]].column.served
        model, tokenizer = served.model, served.tokenizer
        stops = {}
        for r in rows:
            stops.update(stop_maps[r])
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stops))
        # Each row's end-of-turn id, read off its stop map (None where the template has none).
        eot_ids = [next((t for t, why in stop_maps[r].items() if why == STOP_END_OF_TURN), None) for r in rows]
        recorder = _StepRecorder(eot_ids, TOP_K_NEXT)
        kwargs = _generate_kwargs(
            model,
            [columns[r].result.input_ids for r in rows],
            [columns[r].column.served.adapter for r in rows],
            stops,
            pad_id,
            settings,
        )
        kwargs["logits_processor"] = LogitsProcessorList([recorder])
        kwargs["stopping_criteria"].insert(0, _Cancelled(cancel))
        kwargs["streamer"] = _StepStreamer(group, recorder, events)
        with model_lock(model), torch.inference_mode():
            model.generate(**kwargs)
    except Exception as exc:  # reported on this group's columns only; other groups carry on
        logger.exception("Generation failed for %s", [columns[r].column.label for r in rows])
        events.put(("error", group, f"{type(exc).__name__}: {_plain(str(exc))[:300]}", None, None))


@dataclass(frozen=True)
class BatchOutput:
    """One row of `generate_batch`: the new tokens (stop token excluded), their text, and the stop token
    the row emitted (None when it ran into `max_new_tokens`)."""

    ids: list[int]
    text: str
    stop_token: int | None

    @property
    def stopped(self) -> bool:
        return self.stop_token is not None


MAX_BATCH_ROWS = 64


def generate_batch(
    model,
    tokenizer,
    inputs: list[list[int]],
    *,
    stop_ids: set[int] | list[int],
    settings: GenerationSettings,
    adapters: list[str | None] | None = None,
    batch_size: int = 16,
) -> list[BatchOutput]:
    """Generate for many prompts at once (evaluation, distillation), through the comparer's batching.

    `inputs` are token ids exactly as the model should see them (build them with the chat template or
    as raw text). `adapters` names each row's adapter on a peft model (None = the base alone). Rows
    run `batch_size` at a time, left-padded; a row ends at its first stop id or at `max_new_tokens`.
    """
    settings = settings.validated()
    if not stop_ids:
        raise ValueError("generate_batch needs at least one stop token id.")
    if not 1 <= batch_size <= MAX_BATCH_ROWS:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_ROWS}.")
    adapters = list(adapters) if adapters is not None else [None] * len(inputs)
    if len(adapters) != len(inputs):
        raise ValueError("Give one adapter name (or None) per input row.")
    if any(not ids for ids in inputs):
        raise ValueError("Every input row needs at least one token.")
    stops = set(stop_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    outputs: list[BatchOutput] = []
    for start in range(0, len(inputs), batch_size):
        rows = inputs[start : start + batch_size]
        kwargs = _generate_kwargs(model, rows, adapters[start : start + batch_size], stops, pad_id, settings)
        with model_lock(model), torch.inference_mode():
            generated = model.generate(**kwargs)[:, kwargs["input_ids"].shape[1] :].tolist()
        for new_ids in generated:
            # Everything after a row's first stop token is padding from rows that kept going.
            end = next((i for i, t in enumerate(new_ids) if t in stops), None)
            ids = new_ids if end is None else new_ids[:end]
            stop = None if end is None else new_ids[end]
            outputs.append(BatchOutput(ids, tokenizer.decode(ids, skip_special_tokens=True), stop))
    return outputs


@dataclass
class _Slot:
    column: Column
    result: ColumnResult


def stream_columns(columns: list[Column], prompt: str, settings: GenerationSettings) -> Iterator[list[ColumnResult]]:
    """Yield the list of column results after every generated step, until every column is done.

    A column whose input cannot be built (prompt too long for it, no template) shows its error and
    the others still run. Closing the iterator early cancels the remaining generation.
    """
    settings = settings.validated()
    if not prompt or not prompt.strip():
        raise ValueError("Type a prompt (or pick a preset) first.")
    slots = [_Slot(c, ColumnResult(label=c.label)) for c in columns]
    for slot in slots:
        try:
            slot.result.input_ids = build_input_ids(slot.column, prompt)
            slot.result.input_text = slot.column.served.tokenizer.decode(slot.result.input_ids)
        except ValueError as exc:
            slot.result.error = str(exc)
    if all(s.result.error for s in slots):  # nothing to run: say why once, as an input error
        raise ValueError(slots[0].result.error)

    groups: dict[int, list[int]] = {}
    for i, slot in enumerate(slots):
        if slot.result.error is None:
            groups.setdefault(id(slot.column.served.model), []).append(i)
    group_rows = list(groups.values())

    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    started = time.perf_counter()
    stop_maps = {i: stop_token_ids(s.column.served) for i, s in enumerate(slots)}
    threads = [
        threading.Thread(target=_run_group, args=(g, slots, rows, stop_maps, settings, events, cancel), daemon=True)
        for g, rows in enumerate(group_rows)
    ]
    for t in threads:
        t.start()
    yield [s.result for s in slots]

    running = len(threads)
    try:
        while running:
            kind, group, payload, first_top, eot_probs = events.get()
            rows = group_rows[group]
            now = time.perf_counter() - started
            if kind == "error":
                for r in rows:
                    if not slots[r].result.done:
                        slots[r].result.error = payload
                running -= 1
            elif kind == "end":
                for r in rows:
                    result = slots[r].result
                    if not result.done:
                        result.stop_reason = STOP_CANCELLED if cancel.is_set() else STOP_LENGTH
                        result.elapsed_s = now
                running -= 1
            else:
                for i, r in enumerate(rows):
                    _apply_step(slots[r], stop_maps[r], payload[i], first_top, eot_probs[i], i, now)
            yield [s.result for s in slots]
    finally:
        cancel.set()  # the consumer went away (or we are done): stop generating for nobody
        for t in threads:  # at most one more step each (~50 ms on CPU) before generate returns
            t.join(timeout=10)


def _apply_step(slot: _Slot, stops: dict[int, str], token: int, first_top, eot_prob, row: int, now: float):
    result = slot.result
    if result.done:
        return  # finished rows receive padding from generate; ignore it
    tokenizer = slot.column.served.tokenizer
    if not result.top_next and first_top:
        result.top_next = [(tokenizer.convert_ids_to_tokens(t), p) for t, p in first_top[row]]
    if eot_prob is not None:
        result.end_of_turn_probs.append(eot_prob)
    result.elapsed_s = now
    if token in stops:
        result.stop_reason = stops[token]
        result.stop_token = tokenizer.convert_ids_to_tokens(token)
        return
    result.generated_ids.append(token)
    # Decoding the whole answer each step keeps multi-byte characters intact (~0.1 ms at these lengths).
    result.text = tokenizer.decode(result.generated_ids)


def special_token_ids(tokenizer) -> set[int]:
    """Ids of every special token (BOS/EOS/PAD and added ones such as `<start_of_turn>`)."""
    return set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def input_segments(input_ids: list[int], tokenizer) -> list[tuple[str, str | None]]:
    """The exact model input as (text, label) runs: special tokens labelled, plain text not.

    Built from the ids rather than by searching the text, so what is shown is what the model got.
    """
    special = special_token_ids(tokenizer)
    segments: list[tuple[str, str | None]] = []
    plain: list[int] = []
    for token_id in input_ids:
        if token_id in special:
            if plain:
                segments.append((tokenizer.decode(plain), None))
                plain = []
            segments.append((tokenizer.convert_ids_to_tokens(token_id), "special token"))
        else:
            plain.append(token_id)
    if plain:
        segments.append((tokenizer.decode(plain), None))
    return segments


class ResultCache:
    """Finished greedy results by (models, prompt, settings): greedy decoding is deterministic, so a
    preset clicked twice, by anyone, replays instantly. Bounded, and safe across request threads."""

    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(columns: list[Column], prompt: str, settings: GenerationSettings):
        if settings.do_sample:
            return None  # sampled text is not a function of the inputs we could key on
        views = tuple(
            (c.label, c.served.served_id, c.served.adapter, c.use_chat_template, hash(c.served.chat_template))
            for c in columns
        )
        return views, prompt, settings.max_new_tokens

    def get(self, key) -> list[ColumnResult] | None:
        if key is None:
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return copy.deepcopy(self._entries[key])
        return None

    def put(self, key, results: list[ColumnResult]) -> None:
        if key is None or any(r.error or r.stop_reason == STOP_CANCELLED for r in results):
            return  # never replay a failure or a half-finished answer
        with self._lock:
            self._entries[key] = copy.deepcopy(results)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def generate_columns(columns: list[Column], prompt: str, settings: GenerationSettings) -> list[ColumnResult]:
    """Run `stream_columns` to the end and return the final results (benchmarks, caching, tests)."""
    final = None
    for final in stream_columns(columns, prompt, settings):
        pass
    return final
