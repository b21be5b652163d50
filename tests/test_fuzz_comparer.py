"""Hostile input to the comparer's endpoint functions (`/compare`, `/load_pair`), called as Gradio calls them.

Every call must end in a valid answer or one `gr.Error` sentence, within a time bound: never another
exception (a traceback to the visitor) and never a hang. Generation is kept to at most two new tokens so
the valid calls stay quick; the invalid ones must be refused before any model work. Inputs tried: 60 hostile
and 25 valid-but-odd for /compare, 40 for /load_pair (Hypothesis, derandomized so CI sees the same cases every run).
"""

from __future__ import annotations

import math
import time

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow  # the valid calls run the real embedded Gemma 3 270M

# Seconds one call may take here: two tokens on four columns, on a CPU shared with other work.
CALL_BOUND_S = 30

HOSTILE_IDS = [
    "",
    " ",
    "/etc/passwd",
    "../../etc",
    "~/.ssh/id_rsa",
    "acme/model\nINFO forged log line",
    "a" * 5000,
    "org/" + "x" * 300,
    "google/gemma-3-270m",
    "nobody/does-not-exist",
    "embedded:gemma-3-270m",
    "http://127.0.0.1:1/evil",
    "org//name",
    "\x00",
]
# Ids that load (offline: the embedded base, directly or as a fallback with its reason).
VALID_IDS = ["google/gemma-3-270m", "google/gemma-3-270m-it", "nobody/does-not-exist", "embedded:gemma-3-270m"]
model_ids = st.one_of(st.sampled_from(HOSTILE_IDS), st.text(max_size=80))
prompts = st.one_of(
    st.sampled_from(["", "   ", "Hi", "word " * 700, "{{ 7*7 }} {% raw %}", "<start_of_turn>user\n<end_of_turn>"]),
    st.text(max_size=300),
)
numbers = st.one_of(
    st.integers(min_value=-10, max_value=2),
    st.sampled_from([0, 513, 10**9, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "abc", "2"]),
)


@pytest.fixture(scope="module")
def comparer():
    from shared.apps import load_app

    return load_app("comparer")


def _drain(generator):
    last = None
    for last in generator:
        pass
    return last


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=prompts,
    base=model_ids,
    aligned=model_ids,
    tokens=st.one_of(st.sampled_from([1, 2]), numbers),
    temperature=numbers,
    seed=st.one_of(st.just(0), numbers),
)
def test_compare_answers_or_says_one_sentence(comparer, prompt, base, aligned, tokens, temperature, seed):
    started = time.monotonic()
    try:
        final = _drain(comparer.compare(prompt, base, aligned, tokens, False, temperature, 0.9, seed))
    except gr.Error as exc:
        message = str(exc.message)
        assert message and "\n" not in message and "Traceback" not in message
        assert "/etc/passwd" not in message or "not a Hub model id" in message or "No model folder" in message
    else:
        assert final is not None and len(final) == 5 * len(comparer.COLUMN_LABELS) + 1
    assert time.monotonic() - started < CALL_BOUND_S


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=prompts,
    base=st.sampled_from(VALID_IDS),
    aligned=st.sampled_from(VALID_IDS),
    sample=st.booleans(),
    temperature=st.floats(min_value=0.05, max_value=2.0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_hostile_prompts_that_reach_the_models_stream_or_say_one_sentence(
    comparer, prompt, base, aligned, sample, temperature, seed
):
    """Valid ids and settings, so the prompt really goes through every column's template and `generate`."""
    started = time.monotonic()
    try:
        final = _drain(comparer.compare(prompt, base, aligned, 2, sample, temperature, 0.9, seed))
    except gr.Error as exc:
        assert "\n" not in str(exc.message) and ("Type a prompt" in exc.message or "tokens" in exc.message)
    else:
        texts = [final[i] for i in range(2, len(final) - 1, 5)]
        assert any(isinstance(t, str) and t for t in texts), "at least one column answered"
    assert time.monotonic() - started < CALL_BOUND_S


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(["gemma-3-270m", "qwen2.5-0.5b", "", "../x", "\n"]), st.text(max_size=50)))
def test_load_pair_answers_or_says_one_sentence(comparer, key):
    try:
        base_id, aligned_id, note = comparer.load_models(key, progress=lambda *a, **k: None)
    except gr.Error as exc:
        assert "\n" not in str(exc.message) and key not in ("gemma-3-270m", "qwen2.5-0.5b")
    else:
        assert key in comparer.PRESETS and base_id and aligned_id and "Serving" in note


def test_non_finite_decoding_settings_are_one_sentence(comparer):
    for bad in (math.nan, math.inf, -math.inf, None, "abc"):
        with pytest.raises(gr.Error, match="finite numbers"):
            _drain(comparer.compare("Hi", "google/gemma-3-270m", "google/gemma-3-270m-it", bad, False, 0.7, 0.9, 0))
