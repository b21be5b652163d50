"""The LoRA / QLoRA calculator through its API, as a browser or script would reach it."""

import json

import pytest
from gradio_client import handle_file

from shared import memory

APP = "lora_calculator"  # served by the `client` fixture in conftest.py


def _args(**changes) -> dict:
    """`calculate`'s arguments by name: the page's first values at 512 tokens, with `changes`."""
    from shared.apps import load_app

    return {**load_app(APP).DEFAULTS, "seq_len": 512, **changes}


def _calculate(client, **changes):
    return client.predict(**_args(**changes), api_name="/calculate")


def test_lesson_matrix(client):
    summary, modules, chart, fits, notes = _calculate(client, model="4096x4096", targets="all-linear")
    assert "131,072" in summary and "0.775 %" in summary
    assert modules["data"] == [["W", 1, 4096, 4096, 131072, 131072]]
    assert "no activations" in notes


def test_preset_matches_the_library_and_charts_three_methods(client):
    summary, modules, chart, fits, _ = _calculate(client, model="qwen2.5-0.5b", method="qlora", targets="q_proj,v_proj")
    est = memory.estimate_memory(
        memory.resolve_model("qwen2.5-0.5b"), memory.TrainingSetup(method="qlora", targets="q_proj,v_proj", seq_len=512)
    )
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
    args = _args()
    summary, *_ = app.calculate_as_you_type(*args.values())  # gradio passes the inputs in order
    assert "Rank 16" in summary
    args["rank"] = None  # the rank box, emptied
    summary, *rest = app.calculate_as_you_type(*args.values())
    assert summary.startswith("**Not recalculated:**") and "rank" in summary.lower()
    assert all(isinstance(r, type(gr.skip())) for r in rest)
    with pytest.raises(gr.Error):  # the Calculate button (and the API) still report it as an error
        app.calculate(**args)


# --------------------------------------------------------------------------------------------
# No server paths (issue 13, item 5), calling the endpoint's function directly
# --------------------------------------------------------------------------------------------


def _error(app, model="", **kwargs) -> str:
    import gradio as gr

    with pytest.raises(gr.Error) as info:
        app.calculate(**_args(model=model, **kwargs))
    message = info.value.message
    assert message and "\n" not in message
    return message


@pytest.fixture
def app():
    from shared.apps import load_app

    return load_app(APP)


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """gradio's upload folder, moved to a temporary folder for the test."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.mark.parametrize(
    "existing, missing",
    [
        ("/etc/passwd", "/etc/no-such-file"),
        ("/etc", "/no-such-dir"),
        ("~/.bashrc", "~/.no-such-rc"),
        ("./README.md", "./NO-SUCH.md"),
    ],
)
def test_a_typed_path_gets_one_answer_whether_or_not_it_exists(app, existing, missing):
    # Was: "not valid JSON" for /etc/passwd and "No such config file" for a missing file: an existence oracle.
    answers = {_error(app, model=path).replace(path, "<path>") for path in (existing, missing)}
    assert len(answers) == 1, answers
    (answer,) = answers
    assert answer.startswith("Unknown preset") and "root:" not in answer


def test_a_config_file_outside_the_upload_folder_is_never_read(app, uploads, tmp_path):
    outside = tmp_path / "config.json"
    outside.write_text((memory.CONFIG_DIR / "smollm2-135m.json").read_text())  # a perfectly good config
    answers = {_error(app, config_file=path) for path in (str(outside), "/etc/passwd", str(uploads / "gone.json"))}
    assert answers == {app.UPLOAD_UNREADABLE}


def test_an_upload_is_named_by_its_base_name_only(app, uploads):
    good = uploads / "abc123" / "my config.json"
    good.parent.mkdir()
    good.write_text((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
    summary, *_ = app.calculate(**_args(model="", config_file=str(good)))
    assert summary.startswith("### my config.json: LoRA") and str(uploads) not in summary
    bad = uploads / "abc123" / "deep.json"
    bad.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 10**6}))
    message = _error(app, config_file=str(bad))
    assert message.startswith("deep.json: num_hidden_layers") and str(uploads) not in message


def test_an_uploaded_name_cannot_add_markup(app, uploads):
    sneaky = uploads / "[click](https:⁄⁄example.com) <img src=x onerror=alert(1)>.json"
    sneaky.write_text((memory.CONFIG_DIR / "smollm2-135m.json").read_text())
    summary, *_ = app.calculate(**_args(model="", config_file=str(sneaky)))
    heading = summary.splitlines()[0]
    assert "\\[click\\]" in heading and "\\<img" in heading


def test_upload_errors_through_the_api_never_show_the_server_path(client, tmp_path):
    import gradio.utils

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 30_000}))
    with pytest.raises(Exception) as info:
        _calculate(client, model="", config_file=handle_file(str(config)))
    message = str(info.value)
    assert "config.json: num_hidden_layers" in message
    assert gradio.utils.get_upload_folder() not in message and "/tmp" not in message


def test_the_app_protocol(app):
    import time

    assert app.TITLE == "LoRA / QLoRA memory"
    started = time.monotonic()
    app.warm_up()
    app.warm_up()  # idempotent
    assert time.monotonic() - started < 1.0  # returns at once; the build runs in the background
    import ast

    views = ast.parse((memory.CONFIG_DIR.parent.parent / "views" / "calculator.py").read_text())
    imported = {alias.name for node in ast.walk(views) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(views) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("gradio") for name in imported)  # views are plain functions
