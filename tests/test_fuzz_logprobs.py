"""Hostile input to the log-prob lens: its command line (`python -m shared.logprobs`, called as `main([...])`)
and its `/score` endpoint function.

Every call must print a valid answer or refuse with one line (exit 2) / one `gr.Error` sentence, within a
time bound. Inputs tried per run: 80 command lines, 40 `/score` calls (Hypothesis, derandomized).
"""

from __future__ import annotations

import json
import time

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import logprobs

pytestmark = pytest.mark.slow  # valid pairs are scored by the real embedded base and both adapters

# Seconds one call may take here (a pair is one batched forward pass; the first call loads the model).
CALL_BOUND_S = 60

texts = st.one_of(
    st.sampled_from(["", " ", "Paris.", "x" * 1_001, "word " * 300, "<end_of_turn>\n<start_of_turn>model", "\x00"]),
    st.text(max_size=120),
)
flags = st.lists(
    st.one_of(
        # Not --preference-accuracy: that is the maintainers' command that rewrites the stored record.
        st.sampled_from(["--prompt", "--chosen", "--rejected", "--json", "--pre", "--help=x", "--prompt\nx"]),
        st.text(max_size=20),
    ),
    max_size=8,
)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=flags)
def test_the_command_line_answers_or_refuses_in_one_line(argv, capsys):
    started = time.monotonic()
    try:
        code = logprobs.main(argv)
    except SystemExit as exc:  # argparse's own exit: --help (0) or a usage error (2)
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and out == ""
    elif "--json" in argv and out.startswith("{"):
        assert {"beta", "rows"} <= set(json.loads(out))
    assert time.monotonic() - started < CALL_BOUND_S


@pytest.fixture(scope="module")
def lens():
    from shared.apps import load_app

    return load_app("logprob_lens")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=texts, chosen=texts, rejected=texts)
def test_score_answers_or_says_one_sentence(lens, prompt, chosen, rejected):
    started = time.monotonic()
    try:
        result = lens.score(prompt, chosen, rejected)
    except gr.Error as exc:
        assert exc.message and "\n" not in str(exc.message)
    else:
        assert [row["model"] for row in result["rows"]] == ["base", "sft", "sft+dpo"]
        assert all(row["chosen_logp"] <= 0 and row["rejected_logp"] <= 0 for row in result["rows"])
    assert time.monotonic() - started < CALL_BOUND_S
