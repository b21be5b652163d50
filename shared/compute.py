"""Where torch computes on a CPU: in short-lived threads, never on a thread that outlives the work.

torch's CPU kernels run on OpenMP (GNU libgomp). Every thread that enters a parallel region keeps
its own team of worker threads until it exits, and libgomp counts all of them: once more threads
are managed than there are cores, it cuts the time a worker spins waiting for the next region
(300,000 spins down to 100) and puts it to sleep instead. A decode step is hundreds of short
regions, so each then pays a futex wake-up. Measured on this 2-core CPU with Gemma 3 270M,
64 greedy tokens: 2.0 s in a fresh thread, 2.0 s on the main thread, but 2.6 s (+30 %) in a fresh
thread once the main thread has run any parallel op (loading the model is enough).

So model loading and embedding run in a thread that exits when done (its team exits with it),
and generation runs in per-request threads (shared/generation.py): the long-lived threads (main,
Gradio's request workers) then hold no team, and the one that generates keeps full speed.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from typing import Callable, TypeVar

T = TypeVar("T")


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


def fresh_thread(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator form of `in_fresh_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return in_fresh_thread(fn, *args, **kwargs)

    return wrapper
