"""Shared test setup: never touch the network, and build tiny real models in-process."""

import os

# Must be set before huggingface_hub is imported anywhere: tests never reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The real Gemma 3 tokenizer of the embedded model (read from the GGUF once, then cached)."""
    from shared.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture(scope="session")
def tiny_gemma(gemma_tokenizer):
    """A tiny random Gemma 3 text model with the real 262k vocabulary: fast, but every code path is real."""
    import torch
    from transformers import Gemma3ForCausalLM

    from train.common import tiny_gemma_config

    torch.manual_seed(0)
    config = tiny_gemma_config(gemma_tokenizer, width=32)
    model = Gemma3ForCausalLM(config).eval()
    return model


@pytest.fixture(scope="module")
def client(request):
    """A gradio_client for the app named by the test module's `APP`, served on loopback for the module."""
    from gradio_client import Client

    from shared.apps import load_app

    demo = load_app(request.module.APP).demo
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()
