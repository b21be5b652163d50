"""The loader: the real embedded GGUF model, the fallback when the Hub cannot serve a model, and the rules
for what a visitor may load (ids, one copy per model, a cache bounded by bytes, untrusted templates)."""

import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.embedded import EMBEDDED_ID
from shared.generation import Column, GenerationSettings, generate_columns
from shared.loading import load_model, load_pair
from shared.presets import PRESETS


@pytest.mark.slow
def test_embedded_gguf_model_really_runs_and_knows_paris():
    """The lesson's point with a real model: the base knows the fact but keeps on writing."""
    base = load_model(EMBEDDED_ID)
    assert base.served_id == EMBEDDED_ID and not base.is_fallback
    assert base.model.config.model_type == "gemma3_text"
    weights = sum(p.numel() for name, p in base.model.named_parameters() if "lora_" not in name)
    assert weights == pytest.approx(268e6, rel=0.01)  # "270M" (without the project's LoRA adapters)
    (result,) = generate_columns(
        [Column("Base", base, use_chat_template=False)],
        "What is the capital of France?",
        GenerationSettings(max_new_tokens=24),
    )
    assert "Paris" in result.text
    assert result.stop_reason == "hit the token limit"  # a base model does not stop by itself


@pytest.mark.slow
def test_offline_preset_falls_back_to_embedded_with_the_reason_and_the_gemma_template():
    base, aligned = load_pair(PRESETS["gemma-3-1b"])
    assert base.served_id == aligned.served_id == EMBEDDED_ID
    assert base.model is aligned.model  # one copy of the weights serves both columns
    for served in (base, aligned):
        assert "HF_HUB_OFFLINE=1" in served.fallback_reason
        assert "not in the local cache" in served.fallback_reason
    assert aligned.template_source == "trl:gemma3" and aligned.end_of_turn == "<end_of_turn>"
    assert "instead of `google/gemma-3-1b-it`" in aligned.describe()


def test_empty_model_id_is_a_friendly_error():
    with pytest.raises(ValueError, match="Type a model id"):
        load_model("  ")


class _FakeHub(BaseHTTPRequestHandler):
    """Answers like the Hub does for a gated repo and a missing one (status + X-Error-Code)."""

    def _answer(self):
        if "gated" in self.path:
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to model acme/gated-model is restricted.")
        elif "missing" in self.path:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository not found")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_gated_and_missing_ids_fall_back_with_the_reason(tmp_path):
    """Real huggingface_hub errors from a real HTTP exchange, on loopback only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = textwrap.dedent(
        """
        import json
        from shared.loading import load_model
        out = {}
        for model_id in ["acme/gated-model", "acme/missing-model"]:
            served = load_model(model_id, aligned=True)
            out[model_id] = [served.served_id, served.fallback_reason, served.template_source]
        print(json.dumps(out))
        """
    )
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
        HF_HOME=str(tmp_path / "hf-home"),  # an empty Hub cache: nothing to find locally
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    try:
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    served_id, reason, template = out["acme/gated-model"]
    assert served_id == EMBEDDED_ID and "is gated" in reason and "HF_TOKEN" in reason
    assert template == "trl:gemma3"
    served_id, reason, _ = out["acme/missing-model"]
    assert served_id == EMBEDDED_ID and "does not exist on the Hub" in reason


# --------------------------------------------------------------------------------------------
# What a visitor may load, and how often (fast: tiny models saved to a temporary folder)
# --------------------------------------------------------------------------------------------

LOOPING_TEMPLATE = "{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}{% endfor %}{% endfor %}"


@pytest.fixture
def tiny_folder(tmp_path, tiny_gemma, gemma_tokenizer):
    folder = tmp_path / "tiny-gemma"
    tiny_gemma.save_pretrained(folder)
    gemma_tokenizer.save_pretrained(folder)
    return folder


def test_every_spelling_of_one_folder_loads_one_copy(tiny_folder, monkeypatch):
    from shared.loading import canonical_model_id, load_base, loaded_models

    monkeypatch.chdir(tiny_folder.parent)
    spellings = [str(tiny_folder), "tiny-gemma", "./tiny-gemma/", f"{tiny_folder}/../tiny-gemma"]
    assert {canonical_model_id(s, allow_local=True) for s in spellings} == {str(tiny_folder.resolve())}
    models = {id(load_base(s, device="cpu")[0]) for s in spellings}
    assert len(models) == 1
    assert sum(key[0] == str(tiny_folder.resolve()) for key in loaded_models()) == 1


def test_a_public_space_takes_hub_ids_only_and_never_says_whether_a_path_exists(tiny_folder):
    from shared.loading import canonical_model_id

    answers = set()
    for path in (str(tiny_folder), "/etc/passwd", "/no/such/folder", "../../etc", "~/.cache"):
        with pytest.raises(ValueError) as info:
            canonical_model_id(path, allow_local=False)
        answers.add(str(info.value).replace(path, "<id>"))
        assert "not a Hub model id" in str(info.value)
    assert len(answers) == 1  # the same sentence whether the path exists or not: no existence oracle
    assert canonical_model_id("Qwen/Qwen2.5-0.5B", allow_local=False) == "Qwen/Qwen2.5-0.5B"


def test_a_newline_in_a_model_id_cannot_forge_a_log_line(caplog):
    from shared.hub import explain_load_failure, shown

    forged = "acme/x\nINFO shared.loading: admin logged in"
    assert "\n" not in shown(forged) and len(shown("a" * 10_000)) < 100
    with pytest.raises(ValueError) as info:
        load_model(forged)
    assert "\n" not in str(info.value)
    assert "\n" not in explain_load_failure(forged, RuntimeError("boom"))


def test_the_loaded_models_are_bounded_by_bytes(tmp_path, tiny_gemma, gemma_tokenizer, monkeypatch):
    from shared import loading

    folders = []
    for name in ("first", "second"):
        folder = tmp_path / name
        tiny_gemma.save_pretrained(folder)
        gemma_tokenizer.save_pretrained(folder)
        folders.append(str(folder.resolve()))
    cache = loading._ModelCache(max_bytes=1)  # room for one model only: the newest stays
    monkeypatch.setattr(loading, "_MODELS", cache)
    loading.load_base(folders[0], device="cpu")
    loading.load_base(folders[1], device="cpu")
    assert [key[0] for key in cache.keys()] == [folders[1]]
    loading.load_base(folders[0], device="cpu", pin=True)
    loading.load_base(folders[1], device="cpu")
    assert {key[0] for key in cache.keys()} == set(folders)  # a pinned model is never dropped


def test_a_models_own_chat_template_renders_only_in_the_sandbox_and_a_loop_is_stopped(tiny_folder):
    """A folder (or Hub repo) ships its own template: it is untrusted, bounded, and fails only its column."""
    import time

    from shared.generation import Column, GenerationSettings, generate_columns
    from shared.loading import ServedModel

    (tiny_folder / "chat_template.jinja").write_text(LOOPING_TEMPLATE)
    started = time.monotonic()
    served = load_model(str(tiny_folder), aligned=True)
    assert served.template_source == "tokenizer" and not served.is_fallback
    assert served.end_of_turn is None  # its template never finished, so no stop token was derived
    base = ServedModel("tiny", "tiny", served.model, served.tokenizer, None, None, None)
    results = generate_columns(
        [Column("Base", base, use_chat_template=False), Column("Aligned", served, use_chat_template=True)],
        "Hello",
        GenerationSettings(max_new_tokens=2),
    )
    assert time.monotonic() - started < 30  # two sandboxed renders, each stopped after its time limit
    assert results[0].error is None and results[0].generated_ids
    assert "did not finish" in results[1].error


def test_a_models_own_template_is_rendered_once_per_conversation_shape(tiny_folder, gemma_tokenizer):
    from shared.chat_templates import official_template

    # Gemma 3's template plus a comment: the same text, but not a template the project ships.
    (tiny_folder / "chat_template.jinja").write_text(official_template("gemma3") + "{# the model's own copy #}")
    served = load_model(str(tiny_folder), aligned=True)
    assert served.template_source == "tokenizer" and served.end_of_turn == "<end_of_turn>"
    for text in ("What is the capital of France?", "Quote: {{ 7*7 }} and {% raw %}", "x" * 500):
        messages = [{"role": "user", "content": text}]
        expected = gemma_tokenizer.apply_chat_template(
            messages, chat_template=official_template("gemma3"), tokenize=False, add_generation_prompt=True
        )
        assert served.render_chat(messages) == expected
    assert list(served._renders) == [(("user",), True)]  # one sandboxed render served all three prompts
