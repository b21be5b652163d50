"""spaces/deploy.py: each app built as a self-contained Space folder that runs on its own, with front
matter that fits the pins and ZeroGPU, API examples that work, and an upload to a loopback Hub."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from shared.apps import APP_NAMES, load_app

REPO_DIR = Path(__file__).resolve().parent.parent
DEPLOY = REPO_DIR / "spaces" / "deploy.py"
SECRET = "hf_NotARealTokenButSecret987"


def deploy(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEPLOY), *args], capture_output=True, text=True, timeout=timeout,
                          env=env or os.environ.copy())


def deploy_module():
    """spaces/deploy.py imported by path (`spaces` must stay the ZeroGPU package's name)."""
    import importlib.util

    if "pts_deploy" not in sys.modules:
        spec = importlib.util.spec_from_file_location("pts_deploy", DEPLOY)
        module = importlib.util.module_from_spec(spec)
        sys.modules["pts_deploy"] = module
        spec.loader.exec_module(module)
    return sys.modules["pts_deploy"]


def read_space(folder: Path) -> tuple[dict, str, dict[str, Requirement]]:
    """(front matter, README body, requirements by name) of a built Space."""
    _, matter, body = (folder / "README.md").read_text(encoding="utf-8").split("---\n", 2)
    reqs = {}
    for line in (folder / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            reqs[req.name.lower()] = req
    return yaml.safe_load(matter), body, reqs


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("spaces")
    proc = deploy("--all", "--dry-run", str(out), "--repo-id", "someone/pts")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {app: out / app for app in APP_NAMES}


def test_every_app_builds_into_a_folder_with_only_what_it_needs(built):
    for app, folder in built.items():
        assert (folder / "app.py").read_text() == (REPO_DIR / "spaces" / app / "app.py").read_text()
        assert (folder / "shared" / "__init__.py").is_file(), app
    assert "models" not in {p.stem for p in (built["quiz"] / "shared").glob("*.py")}  # no LLM in the lesson
    assert (built["quiz"] / "shared/data/lesson/questions.yaml").is_file()
    assert (built["lora_calculator"] / "shared/data/model_configs/llama-3.1-70b.json").is_file()
    # The comparer ships the project's adapters (weights and config), not the tokenizer copies or checkpoints.
    adapters = built["comparer"] / "train" / "adapters"
    for name in ("gemma-3-270m-sft", "gemma-3-270m-sft-dpo"):
        assert {p.name for p in (adapters / name).iterdir()} == {
            "adapter_config.json", "adapter_model.safetensors", "README.md"}


def test_front_matter_fits_the_hub_the_pins_and_zerogpu(built):
    dep = deploy_module()
    root_gradio = next(Requirement(line) for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
                       if line.startswith("gradio"))
    for app, folder in built.items():
        matter, body, reqs = read_space(folder)
        assert matter["sdk"] == "gradio" and (folder / matter["app_file"]).is_file()
        assert matter["sdk_version"] == str(root_gradio.specifier).lstrip("=") == str(reqs["gradio"].specifier).lstrip("=")
        assert matter["python_version"] in dep.ZEROGPU_PYTHON_VERSIONS
        assert str(reqs["torch"].specifier).lstrip("=") in dep.ZEROGPU_TORCH_VERSIONS
        assert {"title", "emoji", "colorFrom", "colorTo", "short_description", "tags"} <= set(matter)
        assert matter["colorFrom"] in dep.SPACE_COLORS and matter["colorTo"] in dep.SPACE_COLORS
        assert 0 < len(matter["short_description"]) <= 60
        assert "post-training" in matter["tags"]
        assert "## Use via API" in body and "gradio_client" in body
        # Every endpoint the README documents is a named endpoint of the app.
        documented = set(re.findall(r"api_name=\"(/\w+)\"", body))
        assert documented, app
        named = {d.api_name for d in load_app(app).demo.fns.values() if d.api_name}
        assert {e.lstrip("/") for e in documented} <= named, app
    assert built["comparer"].joinpath("README.md").read_text().count("suggested_hardware: zero-a10g") == 1
    assert "google/gemma-3-1b-it" in read_space(built["comparer"])[0]["models"]
    for app in ("lora_calculator", "chat_template_inspector"):
        assert read_space(built[app])[2]["gradio"].extras == {"mcp"}


def test_building_into_the_checkout_is_refused():
    proc = deploy("quiz", "--dry-run", str(REPO_DIR / "shared"))
    assert proc.returncode == 2 and "outside the repository" in proc.stderr
    assert (REPO_DIR / "shared" / "models.py").is_file()


@pytest.mark.parametrize("args, message", [
    ((), "name one app, or pass --all"),
    (("quiz",), "--repo-id USER/NAME is needed"),
    (("quiz", "--repo-id", "not a repo"), "must look like USER/NAME"),
])
def test_bad_arguments_get_one_clear_line(args, message):
    proc = deploy(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# The built folders, started on their own
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not serve within {timeout:.0f} s")


@pytest.fixture(scope="module")
def servers(built):
    """Every built folder started with `python app.py` from inside it, on loopback, all at once."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
    running = {}
    try:
        for app, folder in built.items():
            port = _free_port()
            proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=dict(env, GRADIO_SERVER_PORT=str(port)),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running[app] = (f"http://127.0.0.1:{port}/", proc)
        for url, proc in running.values():
            _wait_until_serving(url, proc, timeout=300)  # the comparer loads a real model first
        yield {app: url for app, (url, _) in running.items()}
    finally:
        for _, proc in running.values():
            proc.terminate()
        for _, proc in running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_a_built_folder_imports_its_own_shared_copy(built):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for folder in built.values():
        proc = subprocess.run([sys.executable, "-c", "import shared; print(shared.__file__)"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=60)
        assert Path(proc.stdout.strip()).resolve() == (folder / "shared" / "__init__.py").resolve()


def test_readme_api_examples_work_against_the_standalone_folder(built, servers):
    """The README's gradio_client snippets, run as written, with the Space id swapped for the local server."""
    for app, folder in built.items():
        matter, body, _ = read_space(folder)
        snippets = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        assert snippets, app
        for code in snippets:
            code = code.replace('Client("someone/pts-' + app.replace("_", "-") + '")', f'Client("{servers[app]}")')
            assert servers[app] in code, f"{app}: the snippet does not call the Space"
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                                  env=dict(os.environ, HF_HUB_OFFLINE="1"))
            assert proc.returncode == 0, f"{app}:\n{code}\n{proc.stderr[-2000:]}"
            assert proc.stdout.strip(), f"{app}: the example printed nothing"
            if "/compare" in code and app == "comparer":
                base, aligned = [line for line in proc.stdout.splitlines() if " -> " in line][:2]
                assert base.startswith("Base ->") and aligned.startswith("Aligned ->"), proc.stdout
                assert "-> ''" not in base and "-> ''" not in aligned  # both columns generated text


def test_calculator_and_inspector_are_also_mcp_tools(servers):
    expected = {"lora_calculator": ("calculate", "LoRA"), "chat_template_inspector": ("inspect", "chat template")}
    for app, (tool, words) in expected.items():
        with urllib.request.urlopen(servers[app] + "gradio_api/mcp/schema", timeout=30) as answer:
            tools = {t["name"]: t for t in json.load(answer)}
        assert tool in tools, f"{app}: MCP tools are {sorted(tools)}"
        assert words.lower() in tools[tool]["description"].lower()
        assert tools[tool]["inputSchema"]["properties"], "arguments come from the docstring and components"
    assert "add_message" not in tools  # page plumbing is not a tool


# --------------------------------------------------------------------------------------------
# Publishing, against a loopback stand-in for the Hub
# --------------------------------------------------------------------------------------------

class _FakeHub(BaseHTTPRequestHandler):
    """Answers the requests huggingface_hub makes to create a Space and upload a folder, like the Hub:
    ZeroGPU hardware is refused (402) as for an account without PRO."""

    requests: list[tuple[str, str, bytes, str | None]] = []

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> bytes:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        self.requests.append((self.command, self.path, body, self.headers.get("Authorization")))
        return body

    def do_GET(self):
        self._record()
        if self.path.startswith("/api/whoami"):
            return self._send(200, {"name": "someone", "type": "user"})
        self._send(404, {"error": "not here"})

    def do_POST(self):
        body = self._record()
        host = self.headers["Host"]
        if self.path == "/api/repos/create":
            request = json.loads(body)
            return self._send(200, {"url": f"http://{host}/spaces/{request['organization']}/{request['name']}"})
        if self.path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if self.path.endswith("/hardware"):
            return self._send(402, {"error": "Subscribe to PRO to use ZeroGPU"})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        if "/commit/" in self.path:
            repo = self.path.split("/api/spaces/")[1].split("/commit/")[0]
            return self._send(200, {"commitUrl": f"http://{host}/spaces/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40})
        self._send(404, {"error": "not here"})

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tmp_path):
    _FakeHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
               HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_TOKEN", None)
    yield env
    server.shutdown()


def test_publish_creates_the_space_says_when_zerogpu_is_refused_and_uploads(hub):
    proc = deploy("comparer", "--repo-id", "someone/base-vs-aligned", env=dict(hub, HF_TOKEN=SECRET))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr
    calls = [(method, path) for method, path, _, _ in _FakeHub.requests]
    assert ("POST", "/api/repos/create") in calls
    create = next(json.loads(body) for method, path, body, _ in _FakeHub.requests if path == "/api/repos/create")
    assert create["type"] == "space" and create["sdk"] == "gradio" and create["name"] == "base-vs-aligned"
    assert ("POST", "/api/spaces/someone/base-vs-aligned/hardware") in calls
    assert "refused zero-a10g" in proc.stderr and "PRO" in proc.stderr  # said plainly, and it carried on
    commit = next(body for method, path, body, _ in _FakeHub.requests if "/commit/" in path)
    files = {}
    for line in commit.decode().splitlines():
        entry = json.loads(line)
        if entry["key"] == "file":
            files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
    assert {"README.md", "app.py", "requirements.txt", "shared/models.py",
            "train/adapters/gemma-3-270m-sft-dpo/adapter_model.safetensors"} <= set(files)
    assert b"sdk_version: " in files["README.md"] and b'Client("someone/base-vs-aligned")' in files["README.md"]
    # Every request carried the token, and only in the Authorization header.
    assert all(auth == f"Bearer {SECRET}" for _, path, _, auth in _FakeHub.requests if path != "/api/agent-harnesses")


def test_publish_without_a_token_stops_before_anything_is_created(hub):
    proc = deploy("quiz", "--repo-id", "someone/lesson", env=hub)
    assert proc.returncode == 2 and "No Hugging Face token" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(path == "/api/repos/create" for _, path, _, _ in _FakeHub.requests)
    offline = deploy("quiz", "--repo-id", "someone/lesson", env=dict(hub, HF_HUB_OFFLINE="1", HF_TOKEN=SECRET))
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr and SECRET not in offline.stderr
