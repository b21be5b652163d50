"""Import a built Space folder under ZeroGPU's own CUDA emulation (the `spaces` package), on a CPU-only torch.

    python tests/zerogpu_harness.py FOLDER [--compare]     # prints one JSON report as its last stdout line

Run it in a subprocess of its own (tests/test_zerogpu.py does): it patches torch and `spaces` process-wide.

What a ZeroGPU Space does at start, reproduced here without a GPU:
- `SPACES_ZERO_GPU=true` turns on the `spaces` package's ZeroGPU mode. Importing it enters torch function and
  dispatch modes on the importing thread only (spaces/zero/torch/patching.py): there, `.to("cuda")` keeps the
  tensor on the CPU and hands back a stand-in that reports `cuda`. Any other thread reaches real CUDA.
- A CPU wheel of torch lacks three things the emulation touches before any model exists: `torch.version.cuda`
  (read at import), `torch._C._cuda_init` (swapped for a function that raises) and a picklable
  `torch.cuda._is_in_bad_fork` (called in a forked worker at import). They are given here, nothing more.

With `--compare` it also stubs the GPU scheduler (`spaces.zero.client.schedule`, `allow`, `release`) and the
worker's CUDA set-up (`torch.init`, `torch.move`), then calls the comparer's `/compare` function twice. The
@spaces.GPU function then runs the way ZeroGPU runs it: in a forked worker process, whose emulation is undone
before the function starts; the worker hands the stand-in tensors their CPU storage (where the real worker
copies them to the GPU), so the model really generates, on the CPU. Every GPU booking is counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

# Before `spaces` (and so before gradio, which the app imports after it) reads its settings.
os.environ["SPACES_ZERO_GPU"] = "true"
os.environ.setdefault("SPACES_ZERO_DEVICE_API_URL", "http://127.0.0.1:9/")  # never called: scheduling is stubbed
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

# What ZeroGPU's CUDA build of torch would report; any 12.x does (spaces/zero/torch/static.py reads it).
EMULATED_CUDA_VERSION = "12.8"
REAL_CUDA_ERROR = "real CUDA reached (no GPU here)"
GPU_ONLY_PACKAGES = ("bitsandbytes",)


def _cuda_init_unavailable() -> None:
    """Stands for the real CUDA start-up: on a ZeroGPU Space's main process it must never run."""
    raise RuntimeError(REAL_CUDA_ERROR)


def _never_in_bad_fork() -> bool:
    """A named function, not a lambda: `spaces` sends it to a forked worker, so it must pickle."""
    return False


def prepare_cpu_torch() -> None:
    if torch.version.cuda is None:
        torch.version.cuda = EMULATED_CUDA_VERSION
    torch._C._cuda_init = _cuda_init_unavailable
    torch.cuda._is_in_bad_fork = _never_in_bad_fork


def hide_packages_the_space_lacks(folder: Path) -> list[str]:
    """Make GPU-only packages installed here for train/ (bitsandbytes) unimportable unless the Space installs
    them too: with `torch.cuda.is_available()` emulated, bitsandbytes loads its CUDA backend at import, which
    needs CUDA symbols a CPU wheel lacks; on the Space it is simply absent, and peft then never imports it."""
    wanted = (folder / "requirements.txt").read_text(encoding="utf-8").lower()
    hidden = [name for name in GPU_ONLY_PACKAGES if name not in wanted]
    for name in hidden:
        sys.modules[name] = None  # `import name` then raises ImportError; find_spec(name) returns None
    return hidden


def import_app(folder: Path):
    """`FOLDER/app.py` imported as a Space does: from inside the folder, its own `shared/` first on the path."""
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("app", folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


def devices(model) -> list[str]:
    return sorted({p.device.type for p in model.parameters()})


def cuda_on_threads() -> dict:
    """`.to("cuda")` on the main thread (emulated) and on a fresh thread (not emulated there)."""
    report = {"main": torch.ones(2).to("cuda").device.type}
    outcome: dict[str, str] = {}

    def elsewhere() -> None:
        try:
            outcome["device"] = torch.ones(2).to("cuda").device.type
        except Exception as exc:  # the point: it fails, and how
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    report["other_thread"] = outcome
    return report


# ------------------------------------------------------------------------------------------------
# The GPU scheduler, stubbed
# ------------------------------------------------------------------------------------------------

BOOKINGS: list[float | None] = []  # one entry per GPU booked, with the duration asked for (seconds)


def _schedule(task_id, request=None, duration=None, gpu_size=None, **_):
    from spaces.zero.api import ScheduleResponse

    BOOKINGS.append(duration.total_seconds() if duration is not None else None)
    return ScheduleResponse(idle=True, nvidiaIndex=0, nvidiaUUID="emulated-gpu", allowToken="emulated")


def _no_call(*args, **kwargs) -> None:
    return None


def _move_to_cpu_backing(callback=None) -> None:
    """In the worker, where the real `move` copies each registered tensor to the GPU: give every stand-in
    its CPU storage instead, so the GPU function computes on the CPU with the same weights."""
    from spaces.zero.torch import patching

    for fake, original in list(patching.cuda_aliases.items()):
        if original is not None:
            fake.data = original


def stub_gpu_scheduler() -> None:
    from spaces.zero import client
    from spaces.zero import torch as zero_torch

    client.schedule = _schedule
    client.allow = _no_call
    client.release = _no_call
    zero_torch.init = _no_call
    zero_torch.move = _move_to_cpu_backing


def run_compare(app, prompt: str, max_new_tokens: int) -> dict:
    """Two identical greedy /compare calls: what each returned, and how many GPU bookings each made."""
    calls = []
    kwargs = dict(
        prompt=prompt,
        base_id=app.DEFAULT_BASE.requested_id,
        aligned_id=app.DEFAULT_ALIGNED.requested_id,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=0.7,
        top_p=0.9,
        seed=0,
    )
    for _ in range(2):
        before = len(BOOKINGS)
        started = time.monotonic()
        updates = list(app.compare(**kwargs))
        final = updates[-1]
        calls.append(
            {
                "updates": len(updates),
                "bookings": len(BOOKINGS) - before,
                "seconds": round(time.monotonic() - started, 2),
                # Each column's text: values come 5 per column (header, input, output, stats, top-5).
                "outputs": [final[i] for i in range(2, len(final) - 1, 5) if isinstance(final[i], str)],
                "final": json.dumps(final, default=str, sort_keys=True),  # the whole last update, comparable
            }
        )
    return {"calls": calls, "durations": BOOKINGS}


def gpu_functions(app) -> list[str]:
    """Names of the app's functions that `spaces.GPU` wrapped (it marks each with a `zerogpu` attribute)."""
    return sorted(name for name, value in vars(app).items() if callable(value) and hasattr(value, "zerogpu"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--compare", action="store_true", help="also run /compare twice with the scheduler stubbed")
    parser.add_argument("--prompt", default="What is the capital of France?")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args(argv)

    report: dict = {"stage": "prepare"}
    try:
        prepare_cpu_torch()
        report["stage"] = "import spaces"
        import spaces  # first, as every app does: with SPACES_ZERO_GPU set it patches torch for ZeroGPU

        report["zero_gpu"] = spaces.config.Config.zero_gpu
        report["stage"] = "import app"
        folder = args.folder.resolve()
        report["hidden_packages"] = hide_packages_the_space_lacks(folder)
        app = import_app(folder)
        report["imported"] = True
        report["gpu_functions"] = gpu_functions(app)
        report["cuda_available"] = torch.cuda.is_available()
        for name in ("DEFAULT_BASE", "DEFAULT_ALIGNED"):
            served = getattr(app, name, None)
            if served is not None:
                report.setdefault("devices", {})[name] = devices(served.model)
        report["stage"] = "threads"
        report["threads"] = cuda_on_threads()
        if args.compare:
            report["stage"] = "compare"
            stub_gpu_scheduler()
            report["compare"] = run_compare(app, args.prompt, args.max_new_tokens)
        report["stage"] = "done"
    except BaseException as exc:  # reported, so the test can say what failed where
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()[-4000:]
    sys.stdout.flush()
    print(json.dumps(report, default=str), flush=True)
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
