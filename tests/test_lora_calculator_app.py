"""The LoRA / QLoRA calculator through its API, as a browser or script would reach it."""

import pytest
from gradio_client import handle_file

from shared import memory

APP = "lora_calculator"  # served by the `client` fixture in conftest.py


def _calculate(client, model="llama-3.2-1b", config_file=None, method="lora", precision="bf16", optimizer="adamw",
               rank=16, alpha=32, targets="all-linear", batch=1, seq=512, ckpt=False, dq=True):
    return client.predict(model, config_file, method, precision, optimizer, rank, alpha, targets, batch, seq, ckpt, dq,
                          api_name="/calculate")


def test_lesson_matrix(client):
    summary, modules, chart, fits, notes = _calculate(client, model="4096x4096", targets="all-linear")
    assert "131,072" in summary and "0.775 %" in summary
    assert modules["data"] == [["W", 1, 4096, 4096, 131072, 131072]]
    assert "no activations" in notes


def test_preset_matches_the_library_and_charts_three_methods(client):
    summary, modules, chart, fits, _ = _calculate(client, model="qwen2.5-0.5b", method="qlora", targets="q_proj,v_proj")
    est = memory.estimate_memory(memory.resolve_model("qwen2.5-0.5b"),
                                 memory.TrainingSetup(method="qlora", targets="q_proj,v_proj", seq_len=512))
    assert f"{est.trainable_params:,}" in summary
    # The stacked bars: one bar per method, one slice per memory part.
    rows = chart["value"]["data"] if "value" in chart else chart["data"]
    methods = {row[0] for row in rows}
    assert methods == {"Full fine-tuning", "LoRA", "QLoRA"}
    assert len(rows) == 3 * len(memory.BAR_PARTS)
    assert [row[0] for row in fits["data"]][0].startswith("T4")


def test_uploaded_config(client, tmp_path):
    config = tmp_path / "config.json"
    config.write_text((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
    summary, *_ = _calculate(client, model="", config_file=handle_file(str(config)), method="full")
    assert "134,515,008" in summary


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model="not-a-model"), "Unknown preset"),
        (dict(rank=0), "minimum"),  # the Number component itself refuses it
        (dict(targets="foo_proj"), "match no linear layer"),
        (dict(model="someone/some-model"), "HF_HUB_OFFLINE"),
    ],
)
def test_bad_input_is_a_friendly_error(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        _calculate(client, **kwargs)


def test_a_half_typed_value_keeps_the_last_result_instead_of_popping_an_error():
    """The live triggers (every control's change) run `calculate_as_you_type`: clearing the rank box to type a
    new one must not raise a toast; the summary says why nothing changed and the rest keeps its last value."""
    import gradio as gr

    from shared.apps import load_app

    app = load_app(APP)
    args = ["llama-3.2-1b", None, "lora", "bf16", "adamw", 16, 32, "all-linear", 1, 512, False, True]
    summary, *_ = app.calculate_as_you_type(*args)
    assert "Rank 16" in summary
    args[5] = None  # the rank box, emptied
    summary, *rest = app.calculate_as_you_type(*args)
    assert summary.startswith("**Not recalculated:**") and "rank" in summary.lower()
    assert all(isinstance(r, type(gr.skip())) for r in rest)
    with pytest.raises(gr.Error):  # the Calculate button (and the API) still report it as an error
        app.calculate(*args)
