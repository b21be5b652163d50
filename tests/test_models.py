"""The model layer: the real embedded GGUF model, and the fallback when the Hub cannot serve a model."""

import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.generation import Column, GenerationSettings, generate_columns
from shared.models import EMBEDDED_ID, PRESETS, load_model, load_pair

pytestmark = pytest.mark.slow  # these load the real embedded model (converted once, then cached)


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


def test_gated_and_missing_ids_fall_back_with_the_reason(tmp_path):
    """Real huggingface_hub errors from a real HTTP exchange, on loopback only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = textwrap.dedent(
        """
        import json
        from shared.models import load_model
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
