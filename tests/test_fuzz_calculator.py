"""Fuzzing the memory calculator's command line and its web endpoint with random and hostile input.

Every call must end in a valid answer or in one clear sentence (exit code 2 and one stderr line from the
CLI, gr.Error from the app's `calculate`), never another exception, and within FUZZ_LIMIT_S. Hostile means:
NaN/inf/huge/negative/non-integer numbers, paths typed as models, malformed Hub ids, control characters,
and config.json files with out-of-range, mistyped, missing, deeply nested or non-JSON content.

Inputs tried per run (Hypothesis, random each run, no example database written): 200 command lines,
60 config files through the command line, 200 endpoint calls with arbitrary values, 60 uploaded config
files through the endpoint — 520 in all. Configs that pass the checks are built (meta device), so those two
tests get the fewest examples. The worst time of each test is printed (`pytest -s`). At the end, each
calculator defect issue 13 reported is replayed through the endpoint as a fixed regression test.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import memory
from shared.apps import load_app

# The checks cost next to nothing; a config that passes them is built, which takes longest for the deepest.
# Generated configs stay shallow (at most 70 layers), far below the bound; 5 s leaves room for a busy
# shared machine.
FUZZ_LIMIT_S = 5.0
WORST: dict[str, float] = {}
COUNT: dict[str, int] = {}
ANSWERED: dict[str, int] = {}  # inputs that got a valid answer rather than an error sentence
APP = load_app("lora_calculator")


def _settings(examples: int):
    # No example database: tests never write into the checkout.
    return settings(
        max_examples=examples,
        deadline=int(FUZZ_LIMIT_S * 1000),
        database=None,
        # capfd is function-scoped; each example reads (and so empties) it before and after its call.
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


@pytest.fixture(scope="module", autouse=True)
def report_worst_times():
    yield
    for name, seconds in sorted(WORST.items()):
        print(f"fuzz worst time: {name} {seconds:.2f} s over {COUNT[name]} inputs ({ANSWERED.get(name, 0)} answered)")


@contextlib.contextmanager
def _timed(name: str):
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    WORST[name] = max(WORST.get(name, 0.0), elapsed)
    COUNT[name] = COUNT.get(name, 0) + 1
    assert elapsed < FUZZ_LIMIT_S, f"{name} took {elapsed:.1f} s"


@pytest.fixture(scope="module", autouse=True)
def imports_done():
    """Import transformers and torch before the clock starts: a one-off cost per process, not per input."""
    memory.resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def folders():
    """A scratch folder for command-line configs, and gradio's upload folder moved to a temporary one."""
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryDirectory() as uploads:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GRADIO_TEMP_DIR", uploads)
            yield Path(scratch), Path(uploads)


def _no_server_path(message: str, *folders: Path) -> None:
    for folder in folders:
        assert str(folder) not in message, message


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

PRESETS = memory.preset_names()
HOSTILE_WORDS = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "-1",
    "0",
    "16",
    "16.0",
    "1_000",
    "0x10",
    str(10**9),
    str(10**12),
    str(2**63),
    "9" * 5000,
    "",
    " ",
    "\n",
    "\x00",
    "all-linear",
    "attention",
    "q_proj,v_proj",
    "q_proj," * 100,
    "/etc/passwd",
    "../../../etc/passwd",
    "~/.ssh/id_rsa",
    "/dev/zero",
    "C:\\Windows\\win.ini",
    "4096x4096",
    "0x0",
    "9999999x9999999",
    "131072x131072",
    "org/name",
    "someone/some-model",
    "org/na\nme",
    "org//name",
    "a" * 300,
    "a" * 300 + ".json",
    "x/" * 300 + "config.json",
    "full",
    "lora",
    "qlora",
    "dora",
    "fp32",
    "bf16",
    "fp8",
    "adamw",
    "sgd",
    "paged-adamw-8bit",
]
WORDS = st.one_of(
    st.sampled_from(HOSTILE_WORDS + PRESETS),
    st.text(max_size=40),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
FLAGS = [
    "--model",
    "--method",
    "--rank",
    "--alpha",
    "--targets",
    "--precision",
    "--optimizer",
    "--batch-size",
    "--seq-len",
]
SWITCHES = ["--gradient-checkpointing", "--no-double-quant", "--json", "-h", "--no-such-flag"]


@st.composite
def command_lines(draw) -> list[str]:
    argv = []
    if draw(st.booleans()):  # most command lines name a usable model, so the other flags get checked
        argv += ["--model", draw(st.sampled_from(PRESETS + ["4096x4096", "64x32"]))]
    for _ in range(draw(st.integers(0, 5))):
        argv += [draw(st.sampled_from(FLAGS)), draw(WORDS)]
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(st.sampled_from(SWITCHES)))
    return argv


SIZE_KEYS = [
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "sliding_window",
    "layer_types",
    "tie_word_embeddings",
    "model_type",
    "pad_token_id",
    "rope_theta",
    "rope_scaling",
    "attn_implementation",
    "text_config",
    "vision_config",
]
NESTED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=30,
)
HOSTILE_VALUES = st.one_of(
    st.integers(0, 70),  # small counts that may well be valid: the config then gets built
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 513, 10**6, 2**17 + 1, 2**21 + 1, 2**63, float("nan"), float("inf"), 1e300, 16.0]),
    st.sampled_from(["NaN", "inf", "llama", "bert", "gemma3_text", "siglip_vision_model", "full_attention"]),
    st.none(),
    st.booleans(),
    st.lists(st.sampled_from(["full_attention", "sliding_attention", 1, None]), max_size=40),
    NESTED,
)
BASES = ["smollm2-135m", "gemma-3-270m", "qwen2.5-0.5b", "gemma-3-4b"]


@st.composite
def config_bytes(draw) -> bytes:
    """A real preset with a few fields set to hostile values; sometimes cut, wrapped deep, or not JSON."""
    data = json.loads((memory.CONFIG_DIR / f"{draw(st.sampled_from(BASES))}.json").read_text())
    for _ in range(draw(st.integers(1, 3))):
        where = data
        if "text_config" in data and draw(st.booleans()):
            where = data["text_config"] if isinstance(data["text_config"], dict) else data
        where[draw(st.sampled_from(SIZE_KEYS) | st.text(max_size=10))] = draw(HOSTILE_VALUES)
    raw = json.dumps(data, allow_nan=True).encode()  # NaN and Infinity literals included
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return raw[: draw(st.integers(0, len(raw)))]  # truncated
    if shape == 1:
        depth = draw(st.integers(1, 5000))
        return b"[" * depth + raw + b"]" * depth  # nested
    if shape == 2:
        return draw(st.binary(max_size=200))
    return raw


ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from(HOSTILE_WORDS),
)


PLAUSIBLE_ARGS = st.fixed_dictionaries(
    {
        "model": st.sampled_from(PRESETS + ["4096x4096", "64x32"]),
        "config_file": st.none(),
        "method": st.sampled_from(memory.METHODS),
        "precision": st.sampled_from(memory.PRECISIONS),
        "optimizer": st.sampled_from(memory.OPTIMIZERS),
        "rank": st.integers(1, 64) | st.integers(1, 64).map(float),  # web forms send 16.0
        "alpha": st.none() | st.floats(0, 512),
        "targets": st.sampled_from(["all-linear", "attention", "q_proj,v_proj", ["q_proj", "k_proj"]]),
        "batch_size": st.integers(1, 8),
        "seq_len": st.integers(1, 4096),
        "checkpointing": st.booleans(),
        "double_quant": st.booleans(),
    }
)


@st.composite
def endpoint_args(draw) -> dict:
    """A plausible call with 0 to 3 of its arguments replaced by anything at all (and 0 is valid)."""
    args = draw(PLAUSIBLE_ARGS)
    for key in draw(st.lists(st.sampled_from(sorted(args)), max_size=3, unique=True)):
        args[key] = draw(ANY)
    return args


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


def _run_cli(capfd, argv: list[str]) -> tuple[int, str, str]:
    # capfd reads file descriptors 1 and 2: a library's logging handler writing to the real stderr counts too.
    capfd.readouterr()
    code = memory.main(argv)
    out, err = capfd.readouterr()
    return code, out, err


def _check_cli_result(name: str, argv: list[str], code: int, out: str, err: str) -> None:
    assert code in (0, 2), (argv, code)
    ANSWERED[name] = ANSWERED.get(name, 0) + (code == 0)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert "Traceback" not in err and not out
    else:
        assert out.strip() and not err, (argv, err)
        if "--json" in argv and not {"-h", "--help"} & set(argv):
            assert json.loads(out)["bytes"]["total"] > 0


@_settings(200)
@given(argv=command_lines())
def test_cli_answers_or_exits_2_with_one_line(capfd, argv):
    with _timed("cli"):
        code, out, err = _run_cli(capfd, argv)
    _check_cli_result("cli", argv, code, out, err)


@_settings(60)
@given(raw=config_bytes(), flags=st.sampled_from([[], ["--json"], ["--method", "full"], ["--method", "qlora"]]))
def test_cli_config_files(capfd, folders, raw, flags):
    scratch, _ = folders
    path = scratch / "config.json"
    path.write_bytes(raw)
    argv = ["--model", str(path), *flags]
    with _timed("cli config files"):
        code, out, err = _run_cli(capfd, argv)
    _check_cli_result("cli config files", argv, code, out, err)


def _call_endpoint(name: str, args: dict, *folders: Path) -> None:
    try:
        outputs = APP.calculate(**args)
    except gr.Error as exc:
        message = exc.message
        assert isinstance(message, str) and message.strip() and "\n" not in message, message
        _no_server_path(message, *folders)
        return
    ANSWERED[name] = ANSWERED.get(name, 0) + 1
    summary, modules, chart, fits, notes = outputs
    assert summary.startswith("### ") and "Memory: **" in summary
    assert len(chart) == 3 * len(memory.BAR_PARTS) and len(fits) == len(memory.GPUS)
    _no_server_path(summary + notes, *folders)


@_settings(200)
@given(args=endpoint_args())
def test_endpoint_answers_or_raises_one_sentence(folders, args):
    with _timed("endpoint"):
        _call_endpoint("endpoint", args, *folders)


@_settings(60)
@given(raw=config_bytes(), name=st.sampled_from(["config.json", "x.json", "a b.json", "[x](y).json"]))
def test_endpoint_uploads(folders, raw, name):
    _, uploads = folders
    path = uploads / "upload" / name  # where gradio would have saved the visitor's file
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(raw)
    args = {**APP.DEFAULTS, "model": "", "config_file": str(path), "rank": 8, "alpha": 16, "seq_len": 256}
    with _timed("endpoint uploads"):
        _call_endpoint("endpoint uploads", args, uploads.parent, uploads)


# --------------------------------------------------------------------------------------------
# The defects issue 13 found (items 4 and 5), replayed through the endpoint as a visitor sends them
# --------------------------------------------------------------------------------------------

LLAMA = json.loads((memory.CONFIG_DIR / "llama-3.2-1b.json").read_text())
DEFECTS = {
    "10^6 layers": (json.dumps({**LLAMA, "num_hidden_layers": 10**6}), {}, "num_hidden_layers"),
    "30k layers in 160 bytes": (
        '{"model_type":"llama","num_hidden_layers":30000,"hidden_size":64,"intermediate_size":64,'
        '"num_attention_heads":1,"vocab_size":8}',
        {},
        "num_hidden_layers",
    ),
    "0 heads": (json.dumps({**LLAMA, "num_attention_heads": 0}), {}, "num_attention_heads"),
    '"NaN" sizes': (json.dumps({**LLAMA, "hidden_size": "NaN", "vocab_size": "NaN"}), {}, "must be a whole number"),
    "deeply nested JSON": ('{"model_type": "llama", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", {}, "nested"),
    "rank 10^12": (json.dumps(LLAMA), {"rank": 10**12}, "rank"),
    "seq-len 10^9": (json.dumps(LLAMA), {"seq_len": 10**9}, "sequence length"),
    "nan rank": (json.dumps(LLAMA), {"rank": float("nan")}, "rank"),
    "inf seq-len": (json.dumps(LLAMA), {"seq_len": float("inf")}, "sequence length"),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_issue_13_calculator_defects_are_one_sentence_at_once(folders, defect):
    _, uploads = folders
    text, changes, words = DEFECTS[defect]
    path = uploads / "defects" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(gr.Error) as info:
        APP.calculate(**{**APP.DEFAULTS, "model": "", "config_file": str(path), "seq_len": 512, **changes})
    assert time.monotonic() - started < 1.0  # refused before anything is built
    message = info.value.message
    assert words in message and "\n" not in message and str(uploads) not in message, message
