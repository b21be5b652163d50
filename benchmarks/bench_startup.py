"""Seconds from `python app.py` to a page being served, on a warm cache (the goal: ≤ 30 s).

    python benchmarks/bench_startup.py [--script app.py] [--runs 2]

The first run may include the one-time GGUF conversion; the runs after it show a normal start.
The last line is `startup_s=X` (the fastest warm run).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_serve(script: str, timeout_s: float = 600.0) -> float:
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, script], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.perf_counter() - start < timeout_s:
            if proc.poll() is not None:
                raise SystemExit(f"{script} exited with code {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"{script} did not serve within {timeout_s:.0f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", default="app.py")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    times = []
    for run in range(1, args.runs + 1):
        times.append(time_to_serve(args.script))
        print(f"run {run}: {times[-1]:.1f} s to serve {args.script}")
    print(f"startup_s={min(times[1:] or times):.1f}")


if __name__ == "__main__":
    main()
