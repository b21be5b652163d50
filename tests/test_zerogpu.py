"""Every built Space imported under ZeroGPU's own CUDA emulation (the `spaces` package), without a GPU.

Each check runs tests/zerogpu_harness.py in a subprocess of its own: the emulation patches torch and
`spaces` process-wide, so nothing leaks into other tests. What a ZeroGPU Space must do, checked here:
the app imports; the comparer's default models are on `cuda` when the import finishes; the emulation
answers only on the main thread (so loads and `.to()` must run there); a `/compare` call books a GPU and
runs the generator in a forked GPU worker; the same greedy request again is served by the main process
from its cache, with no GPU booked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.apps import APP_NAMES

pytestmark = pytest.mark.slow  # each subprocess imports gradio and torch; the comparer loads Gemma 3 270M

REPO_DIR = Path(__file__).resolve().parent.parent
HARNESS = Path(__file__).resolve().parent / "zerogpu_harness.py"
# Bounds for one subprocess (seconds): the comparer converts the embedded model on a cold cache, loads it,
# forks a GPU worker and generates 4 tokens × 4 columns on two busy cores; the others only import.
COMPARER_TIMEOUT_S = 900
IMPORT_TIMEOUT_S = 300
CPU_APPS = [app for app in APP_NAMES if app != "comparer"]


def _deploy():
    """spaces/deploy.py imported by path (`spaces` must stay the ZeroGPU package's name)."""
    if "pts_deploy" not in sys.modules:
        spec = importlib.util.spec_from_file_location("pts_deploy", REPO_DIR / "spaces" / "deploy.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["pts_deploy"] = module
        spec.loader.exec_module(module)
    return sys.modules["pts_deploy"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("zerogpu-spaces")
    return {app: _deploy().build(app, out / app, f"someone/pts-{app.replace('_', '-')}") for app in APP_NAMES}


def run_harness(folder: Path, *args: str, timeout: float, tmp_path: Path) -> dict:
    """The harness's JSON report for `folder`; its stderr tail is attached when the run failed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        HF_HUB_OFFLINE="1",
        ZEROGPU_OFFLOAD_DIR=str(tmp_path / "zerogpu-offload"),  # never the home folder
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("SPACE_ID", None)  # a local run: the default pair is the embedded one, which works offline
    # A session of its own: on a timeout the whole group goes, the forked GPU worker included.
    proc = subprocess.Popen(
        [sys.executable, str(HARNESS), str(folder), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return {"error": f"no report within {timeout:.0f} s", "stderr": stderr[-3000:]}
    finally:
        try:  # a worker left behind by a run that did finish
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lines = stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"error": "no report"}
    if "error" in report:
        report["stderr"] = stderr[-3000:]
    return report


def explain(report: dict) -> str:
    """Where and why the harness stopped, with the traceback and the child's stderr tail."""
    where = f"failed at {report.get('stage')}: {report.get('error')}"
    return "\n".join([where, report.get("traceback", ""), report.get("stderr", "")])


@pytest.fixture(scope="module")
def comparer(built, tmp_path_factory) -> dict:
    """One run of the built comparer under emulation: import, thread checks, then /compare twice."""
    return run_harness(
        built["comparer"], "--compare", timeout=COMPARER_TIMEOUT_S, tmp_path=tmp_path_factory.mktemp("zerogpu-comparer")
    )


@pytest.mark.parametrize("app", CPU_APPS)
def test_cpu_spaces_import_under_zerogpu(built, app, tmp_path):
    report = run_harness(built[app], timeout=IMPORT_TIMEOUT_S, tmp_path=tmp_path)
    assert report.get("zero_gpu") is True, explain(report)
    assert report.get("imported") is True, explain(report)


def test_the_comparer_imports_with_its_default_models_on_cuda(comparer):
    assert comparer.get("zero_gpu") is True, explain(comparer)
    assert comparer.get("imported") is True, explain(comparer)
    assert comparer["cuda_available"] is True  # what the app sees: ZeroGPU's emulated device
    assert comparer["devices"] == {"DEFAULT_BASE": ["cuda"], "DEFAULT_ALIGNED": ["cuda"]}, comparer["devices"]


def test_cuda_is_emulated_on_the_main_thread_only(comparer):
    """Why every load and `.to()` must run on the main thread under ZeroGPU: elsewhere it reaches CUDA."""
    assert "threads" in comparer, explain(comparer)
    threads = comparer["threads"]
    assert threads["main"] == "cuda"
    assert "device" not in threads["other_thread"], "a second thread got an emulated CUDA tensor"
    assert "CUDA" in threads["other_thread"]["error"], threads["other_thread"]


def test_compare_generates_in_a_gpu_worker_then_replays_from_the_main_process_cache(comparer):
    assert "compare" in comparer, explain(comparer)
    # /compare itself is a plain function of the main process; only what it calls books a GPU.
    assert comparer["gpu_functions"] and "compare" not in comparer["gpu_functions"], comparer["gpu_functions"]
    first, second = comparer["compare"]["calls"]
    # The first request books one GPU and streams what the forked worker generated: every column answered.
    assert first["bookings"] == 1, first
    assert first["updates"] >= 2, "the answer should stream, not arrive in one piece"
    assert len(first["outputs"]) >= 2 and all(text.strip() for text in first["outputs"]), first["outputs"]
    # Booked for about as long as 4 tokens need, not a fixed minute of the visitor's quota.
    assert 0 < comparer["compare"]["durations"][0] < 60, comparer["compare"]["durations"]
    # The same greedy request again: answered in the main process, from its cache, with no GPU booked.
    assert second["bookings"] == 0, second
    assert second["final"] == first["final"]


# --------------------------------------------------------------------------------------------
# benchmarks/gpu_check.py: what can be checked without a GPU
# --------------------------------------------------------------------------------------------

GPU_CHECK = REPO_DIR / "benchmarks" / "gpu_check.py"


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine with one
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], env=env, capture_output=True, text=True, timeout=300)


def test_gpu_check_without_a_gpu_exits_2_with_one_line():
    proc = gpu_check()
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in proc.stderr
    for bad in (["--repeats", "0"], ["--max-new-tokens", "100000"], ["--bogus"]):
        proc = gpu_check(*bad)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, bad


def test_gpu_check_dry_run_builds_the_space_and_prints_one_line_per_estimate():
    proc = gpu_check("--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("comparer built_space files=") and int(lines[0].split("=")[1]) > 10
    estimates = {}
    for line in lines[1:]:
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert line.startswith("memory ") and fields["measured_gb"] == "not-run", line
        estimates[fields["method"]] = float(fields["estimate_allocated_gb"])
    # Gemma 3 270M at the calculator's default setup: full fine-tuning holds the most, QLoRA the least.
    assert list(estimates) == ["full", "lora", "qlora"]
    assert estimates["full"] > estimates["lora"] > estimates["qlora"] > 0
