"""The thread rule: under ZeroGPU model work runs on the main thread, on a CPU in short-lived threads."""

from __future__ import annotations

import threading

import pytest

from shared import compute


class _FakeDemo:
    """What `serve` needs of a gr.Blocks: launch without blocking, a running flag, close."""

    def __init__(self):
        self.is_running = False
        self.launched_with = None
        self.closed = False

    def launch(self, **kwargs):
        self.launched_with = kwargs
        self.is_running = True

    def close(self):
        self.closed = True


def test_work_from_a_request_thread_runs_on_the_main_thread_while_serving(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    demo = _FakeDemo()
    seen: dict[str, object] = {}

    def request():  # what a Gradio worker thread does when a visitor asks for a new model
        compute._main_loop_running.wait(timeout=10)
        seen["thread"] = compute.model_thread_call(lambda: threading.current_thread())
        with pytest.raises(ZeroDivisionError):  # the caller gets the main thread's exception
            compute.model_thread_call(lambda: 1 / 0)
        demo.is_running = False  # the server stops: serve() returns

    worker = threading.Thread(target=request)
    worker.start()
    compute.serve(demo, quiet=True)  # this test runs on pytest's main thread
    worker.join(timeout=10)
    assert seen["thread"] is threading.main_thread()
    assert demo.launched_with == {"prevent_thread_lock": True, "quiet": True} and demo.closed


def test_without_a_serving_main_thread_zerogpu_work_is_refused_not_run_elsewhere(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    outcome = {}

    def request():
        try:
            compute.model_thread_call(lambda: "loaded")
        except RuntimeError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=request)
    worker.start()
    worker.join(timeout=10)
    assert "main thread" in outcome["error"]
    assert compute.model_thread_call(lambda: "loaded") == "loaded"  # on the main thread it simply runs


def test_on_a_cpu_model_work_runs_in_a_thread_that_exits(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    thread = compute.model_thread_call(lambda: threading.current_thread())
    assert thread is not threading.main_thread() and not thread.is_alive()
    assert compute.default_device() in ("cpu", "cuda")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert compute.default_device() == "cuda"  # any thread picks cuda on ZeroGPU, not only the patched one
