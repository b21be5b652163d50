"""Where torch work runs: which device and dtype, and on which thread.

**The thread rule** (`model_thread_call`): model loads and every `.to(device)` go through one function.

- On ZeroGPU (`SPACES_ZERO_GPU=true`), the `spaces` package emulates CUDA at start-up with torch
  function/dispatch modes that are *thread-local*: they are active only on the thread that imported
  `spaces` (the main thread). There `.to("cuda")` only registers the tensors, which a GPU worker gets
  later; on any other thread the same call reaches the real CUDA init, which `spaces` makes fail. So
  under ZeroGPU every load runs on the main thread: directly when the caller is the main thread
  (import time), else handed to the main thread's job loop (`serve`) and awaited.
- On a plain CPU, loads run in a short-lived thread instead. torch's CPU kernels run on OpenMP (GNU
  libgomp): every thread that enters a parallel region keeps its own team of workers until it exits,
  and once more threads are managed than there are cores libgomp stops spinning between regions and
  sleeps instead. A decode step is hundreds of short regions, each of which then pays a futex wake-up
  (benchmarks/bench_comparer.py measures the cost). A thread that exits takes its team with it, so the
  long-lived threads (main, Gradio's workers) hold none and the thread that generates keeps full speed.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import logging
import os
import queue
import threading
from typing import Callable, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a request thread waits for the main thread to finish a load for it (seconds): a 1B
# checkpoint downloads and loads well within this; a stuck load must not hold a worker forever.
MAIN_THREAD_WAIT_S = 600.0

_main_jobs: "queue.Queue[tuple[concurrent.futures.Future, Callable[[], object]] | None]" = queue.Queue()
_main_loop_running = threading.Event()


def zero_gpu_active() -> bool:
    """True on a ZeroGPU Space (and under its emulation): the `spaces` package patches CUDA then."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def in_fresh_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` run in a new thread that exits afterwards; its result or exception is
    passed back here. The caller's context variables go along (gradio finds a request's progress
    bar through them); torch's grad mode is thread-local and does not, so `fn` sets its own."""
    outcome: dict[str, object] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # re-raised in the caller, with its own traceback
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"compute-{getattr(fn, '__name__', 'fn')}", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def start_once(name: str, work: Callable[[], object]) -> None:
    """Run `work` in a daemon thread named `name` the first time this is called with that name; later
    calls do nothing. The apps' `warm_up()` use it: it returns at once and is safe to call twice."""
    with _started_lock:
        if name in _started:
            return
        thread = threading.Thread(target=work, name=name, daemon=True)
        _started[name] = thread
        thread.start()


_started: dict[str, threading.Thread] = {}
_started_lock = threading.Lock()


def on_main_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` on the main thread: at once when called there, else through `serve`'s loop."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args, **kwargs)
    if not _main_loop_running.is_set():
        raise RuntimeError(
            "This work must run on the main thread (ZeroGPU's CUDA emulation lives there), but the main "
            "thread is not serving jobs: start the app with shared.compute.serve(demo)."
        )
    future: concurrent.futures.Future = concurrent.futures.Future()
    _main_jobs.put((future, functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)))
    return future.result(timeout=MAIN_THREAD_WAIT_S)


def model_thread_call(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run a model load or a device move where it must run (see the module docstring): the one rule."""
    if zero_gpu_active():
        return on_main_thread(fn, *args, **kwargs)
    return in_fresh_thread(fn, *args, **kwargs)


def serve(demo, **launch_kwargs) -> None:
    """Launch a Gradio app without blocking, then let the main thread run queued model loads until
    the server stops (Ctrl+C). Every app's `__main__` uses this instead of a bare `demo.launch()`."""
    demo.launch(prevent_thread_lock=True, **launch_kwargs)
    _main_loop_running.set()
    try:
        while True:
            try:
                job = _main_jobs.get(timeout=0.5)
            except queue.Empty:
                if getattr(demo, "is_running", True) is False:
                    break
                continue
            if job is None:
                break
            future, work = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:  # handed to the waiting request thread
                    future.set_exception(exc)
    except KeyboardInterrupt:
        logger.info("Stopping")
    finally:
        _main_loop_running.clear()
        demo.close()


# --------------------------------------------------------------------------------------------
# Device, dtype, and a fast path for the output head
# --------------------------------------------------------------------------------------------


def default_device() -> str:
    import torch

    # Under ZeroGPU the CUDA emulation answers only on the main thread; any thread must still pick cuda.
    return "cuda" if zero_gpu_active() or torch.cuda.is_available() else "cpu"


def cpu_has_fast_bf16() -> bool:
    import torch

    try:  # oneDNN's own check: native bf16 (AVX512-BF16/AMX) or AVX512 paths that run it well
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_dtype(device: str):
    """bf16 wherever it is fast: decoding reads every weight once per token, so half the bytes is
    nearly twice the speed. CPUs without fast bf16 emulate it slowly: fp32 there."""
    import torch

    if device == "cuda" or cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def _make_contiguous(module, args):
    import torch

    hidden = args[0]
    # `is_contiguous()` ignores strides of size-1 dims, so a (1, 1, H) slice of a (1, T, H) tensor
    # passes it and `.contiguous()` keeps the odd stride; `F.linear` still takes the slow path then.
    if hidden.dim() == 3 and hidden.stride(0) != hidden.size(1) * hidden.size(2):
        hidden = hidden.clone(memory_format=torch.contiguous_format)
    return (hidden, *args[1:])


def contiguous_head_input(model) -> None:
    """Hand the output head a contiguous hidden state (idempotent; in place).

    At the first step of `generate`, the head receives `hidden[:, -1:, :]`, a strided view. For such
    a 3-D input `F.linear` falls back to a batched matmul that copies the whole head (Gemma 3:
    262,144 x 640 weights) once per row; made dense first (a 640-value copy per row) it does not.
    """
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_pts_contiguous_input", False):
        head.register_forward_pre_hook(_make_contiguous)
        head._pts_contiguous_input = True
