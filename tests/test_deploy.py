"""spaces/deploy.py: each app built as a self-contained Space folder that runs on its own, with front
matter that fits the pins and ZeroGPU, API examples that work, and an upload to a loopback Hub."""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import json
import logging
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
from packaging.version import Version

from shared.apps import APP_NAMES, load_app

REPO_DIR = Path(__file__).resolve().parent.parent
DEPLOY = REPO_DIR / "spaces" / "deploy.py"
SECRET = "hf_NotARealTokenButSecret987"


def python(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`python ARGS` in a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy(), cwd=cwd
    )


def deploy(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return python(str(DEPLOY), *args, env=env, timeout=timeout)


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
    """(front matter, README body, requirements by name) of a built Space (pip's option lines skipped)."""
    _, matter, body = (folder / "README.md").read_text(encoding="utf-8").split("---\n", 2)
    reqs = {}
    for line in (folder / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            reqs[req.name.lower()] = req
    return yaml.safe_load(matter), body, reqs


def shared_files_imported_by(path: Path) -> set[str]:
    """The repository files of the `shared` modules a file imports by name (`from shared.x import y`)."""
    files = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shared."):
            module = REPO_DIR.joinpath(*node.module.split("."))
            files.add((module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"))
    return {f.relative_to(REPO_DIR).as_posix() for f in files}


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
        # What the app imports by name is there, subpackages (shared/views/...) with their __init__.py.
        for name in shared_files_imported_by(REPO_DIR / "spaces" / app / "app.py"):
            assert (folder / name).is_file(), f"{app}: {name}"
            assert (folder / name).parent.joinpath("__init__.py").is_file(), f"{app}: {name}"
    assert "models" not in {p.stem for p in (built["quiz"] / "shared").glob("*.py")}  # no LLM in the lesson
    assert (built["quiz"] / "shared/data/lesson/questions.yaml").is_file()
    assert (built["lora_calculator"] / "shared/data/model_configs/llama-3.1-70b.json").is_file()
    # The comparer ships the project's adapters (weights and config), not the tokenizer copies or checkpoints.
    adapters = built["comparer"] / "train" / "adapters"
    for name in ("gemma-3-270m-sft", "gemma-3-270m-sft-dpo"):
        assert {p.name for p in (adapters / name).iterdir()} == {
            "adapter_config.json",
            "adapter_model.safetensors",
            "README.md",
        }


def test_front_matter_fits_the_hub_the_pins_and_zerogpu(built):
    dep = deploy_module()
    root_gradio = next(
        Requirement(line)
        for line in (REPO_DIR / "requirements.txt").read_text().splitlines()
        if line.startswith("gradio")
    )
    for app, folder in built.items():
        matter, body, reqs = read_space(folder)
        assert matter["sdk"] == "gradio" and (folder / matter["app_file"]).is_file()
        assert (
            matter["sdk_version"] == str(root_gradio.specifier).lstrip("=") == str(reqs["gradio"].specifier).lstrip("=")
        )
        assert matter["python_version"] in dep.ZEROGPU_PYTHON_VERSIONS
        assert Version(str(reqs["torch"].specifier).lstrip("=")).public in dep.ZEROGPU_TORCH_VERSIONS
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


def _pip_reads(requirements: Path) -> tuple[list[str], list[str]]:
    """(requirements, extra index URLs) as pip itself parses the file: the spelling the Space's build accepts."""
    from pip._internal.index.collector import LinkCollector
    from pip._internal.index.package_finder import PackageFinder
    from pip._internal.models.search_scope import SearchScope
    from pip._internal.models.selection_prefs import SelectionPreferences
    from pip._internal.network.session import PipSession
    from pip._internal.req.req_file import parse_requirements

    session = PipSession()
    finder = PackageFinder.create(
        LinkCollector(session, SearchScope.create([], [], False)), SelectionPreferences(allow_yanked=False)
    )
    lines = [str(r.requirement) for r in parse_requirements(str(requirements), session=session, finder=finder)]
    return lines, finder.index_urls


def test_cpu_spaces_install_the_cpu_wheel_of_torch_and_the_comparer_the_cuda_build(built):
    dep = deploy_module()
    for app, folder in built.items():
        lines, indexes = _pip_reads(folder / "requirements.txt")
        torch = next(Requirement(line) for line in lines if Requirement(line).name == "torch")
        if dep.SpaceSpec.load(app).hardware == "cpu-basic":
            assert indexes == [dep.TORCH_CPU_INDEX], app
            # Only the CPU build satisfies the pin: the default index's CUDA wheel (plain 2.11.0) does not.
            assert torch.specifier.contains(f"{dep.SPACE_TORCH}+cpu") and not torch.specifier.contains(dep.SPACE_TORCH)
        else:
            assert indexes == [] and str(torch.specifier) == f"=={dep.SPACE_TORCH}", app
    assert deploy_module().SpaceSpec.load("comparer").hardware == "zero-a10g"


def _top_level_imports(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "shared"}


def test_each_space_requires_what_its_files_import_and_nothing_else(built):
    dep = deploy_module()
    normal = dep._normalise
    providers = importlib.metadata.packages_distributions()
    for app, folder in built.items():
        _, _, reqs = read_space(folder)
        required = {normal(name) for name in reqs}
        imported = {normal(d) for top in _top_level_imports(folder) for d in providers[top]}
        indirect = {
            name
            for module, names in dep.INDIRECT_REQUIREMENTS.items()
            if (folder / Path(*module.split("."))).with_suffix(".py").is_file()
            for name in names
        }
        # Nothing the files do not use (torch is pinned whenever something pulls it in, to choose its build).
        assert required <= imported | indirect | {"torch"}, f"{app}: {sorted(required - imported - indirect)}"
        # Everything they import gets installed, listed or as a dependency of what is listed.
        assert imported <= required | dep._dependencies_of(required), f"{app}: {sorted(imported - required)}"
    assert "spaces" not in {normal(n) for app in built if app != "comparer" for n in read_space(built[app])[2]}


def test_the_comparer_preloads_the_pair_a_space_starts_with(built):
    """preload_from_hub names the pair the app loads at start on a Space (SPACE_ID set), not the local one."""
    code = "from shared.presets import DEFAULT_PAIR, PRESETS; p = PRESETS[DEFAULT_PAIR]; print(p.base_id, p.aligned_id)"
    proc = python("-c", code, env=dict(os.environ, SPACE_ID="someone/pts-comparer"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    on_spaces = proc.stdout.split()
    from shared.presets import DEFAULT_PAIR, PRESETS

    local = PRESETS[DEFAULT_PAIR]
    matter = read_space(built["comparer"])[0]
    assert matter["preload_from_hub"] == on_spaces != [local.base_id, local.aligned_id]
    assert set(on_spaces) <= set(matter["models"])
    for app in set(built) - {"comparer"}:
        assert "preload_from_hub" not in read_space(built[app])[0], app


def test_the_readme_names_gated_models_and_the_token_secret(built):
    from shared.presets import GATED_MODELS

    _, body, _ = read_space(built["comparer"])
    gated = sorted(set(read_space(built["comparer"])[0]["models"]) & GATED_MODELS)
    assert gated and all(f"`{model}`" in body for model in gated)
    assert "`HF_TOKEN`" in body and "--set-token-secret" in body


def test_a_module_s_repository_files_are_found_from_its_path_expressions(tmp_path):
    dep = deploy_module()
    module = tmp_path / "reader.py"
    module.write_text(
        "from pathlib import Path\n"
        "RECIPE = REPO_DIR / 'train' / 'recipes' / 'gemma-3-1b' / 'sft.yaml'\n"
        "CONFIG = ADAPTERS_DIR / 'gemma-3-270m-sft' / 'adapter_config.json'\n"
        "NOT_YET = ADAPTERS_DIR / 'measured.json'\n"  # written later by a command: skipped until it exists
        "EVERYTHING = REPO_DIR / 'train'\n"  # a folder outside shared/data: never copied whole
        "DYNAMIC = REPO_DIR / 'train' / name\n"  # not a literal path
    )
    assert dep.repo_files_read(module) == {
        REPO_DIR / "train" / "recipes" / "gemma-3-1b" / "sft.yaml",
        REPO_DIR / "train" / "adapters" / "gemma-3-270m-sft" / "adapter_config.json",
    }


def test_building_into_the_checkout_is_refused():
    proc = deploy("quiz", "--dry-run", str(REPO_DIR / "shared"))
    assert proc.returncode == 2 and "outside the repository" in proc.stderr
    assert (REPO_DIR / "shared" / "loading.py").is_file()  # nothing was emptied


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "name one app, or pass --all"),
        (("quiz",), "--repo-id USER/NAME is needed"),
        (("quiz", "--repo-id", "not a repo"), "must look like USER/NAME"),
        (("quiz", "--dry-run", "out", "--set-token-secret"), "only applies when publishing"),
    ],
)
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
            proc = subprocess.Popen(
                [sys.executable, "app.py"],
                cwd=folder,
                env=dict(env, GRADIO_SERVER_PORT=str(port)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
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
        proc = python("-c", "import shared; print(shared.__file__)", env=env, cwd=folder)
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
            proc = python("-c", code, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=180)
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
            return self._send(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if self.path.endswith("/secrets"):
            return self._send(200, {})
        if "/commit/" in self.path:
            repo = self.path.split("/api/spaces/")[1].split("/commit/")[0]
            return self._send(
                200, {"commitUrl": f"http://{host}/spaces/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40}
            )
        self._send(404, {"error": "not here"})

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tmp_path):
    _FakeHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
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
    assert {
        "README.md",
        "app.py",
        "requirements.txt",
        "train/adapters/gemma-3-270m-sft-dpo/adapter_model.safetensors",
    } <= set(files)
    assert shared_files_imported_by(REPO_DIR / "spaces" / "comparer" / "app.py") <= set(files)
    # No token secret unless asked for; the log says which models that leaves out, in one line.
    assert not any(path.endswith("/secrets") for _, path, _, _ in _FakeHub.requests)
    gated_lines = [line for line in proc.stderr.splitlines() if "Gated on the Hub" in line]
    assert len(gated_lines) == 1 and "google/gemma-3-1b-pt" in gated_lines[0] and "--set-token-secret" in gated_lines[0]
    assert b"sdk_version: " in files["README.md"] and b'Client("someone/base-vs-aligned")' in files["README.md"]
    # Every request carried the token, and only in the Authorization header.
    assert all(auth == f"Bearer {SECRET}" for _, path, _, auth in _FakeHub.requests if path != "/api/agent-harnesses")


def test_publish_without_a_token_stops_before_anything_is_created(hub):
    proc = deploy("quiz", "--repo-id", "someone/lesson", env=hub)
    assert proc.returncode == 2 and "No Hugging Face token" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(path == "/api/repos/create" for _, path, _, _ in _FakeHub.requests)
    offline = deploy("quiz", "--repo-id", "someone/lesson", env=dict(hub, HF_HUB_OFFLINE="1", HF_TOKEN=SECRET))
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr and SECRET not in offline.stderr


def test_publish_can_store_the_token_as_the_space_secret_before_the_upload(hub):
    proc = deploy(
        "comparer", "--repo-id", "someone/base-vs-aligned", "--set-token-secret", env=dict(hub, HF_TOKEN=SECRET)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr and "HF_TOKEN" in proc.stderr
    paths = [path for _, path, _, _ in _FakeHub.requests]
    secret_at = paths.index("/api/spaces/someone/base-vs-aligned/secrets")
    assert secret_at < next(i for i, path in enumerate(paths) if "/commit/" in path)  # the first build has it
    secret = json.loads(_FakeHub.requests[secret_at][2])
    assert (secret["key"], secret["value"]) == ("HF_TOKEN", SECRET)
    # The token travels in that one request body and in Authorization headers, nowhere else.
    assert [i for i, (_, _, body, _) in enumerate(_FakeHub.requests) if SECRET.encode() in body] == [secret_at]


# --------------------------------------------------------------------------------------------
# Publishing in-process, with huggingface_hub's HfApi replaced by a recorder
# --------------------------------------------------------------------------------------------


class _RecordingHfApi:
    """The HfApi methods publish() uses, recording each call; uploads keep every file's bytes."""

    calls: list[tuple] = []

    def __init__(self, *args, **kwargs):
        pass

    def whoami(self, *args, **kwargs):
        return {"name": "someone", "type": "user"}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs.get("repo_type")))
        return f"https://huggingface.co/spaces/{repo_id}"

    def request_space_hardware(self, repo_id, hardware, **kwargs):
        self.calls.append(("request_space_hardware", repo_id, hardware))

    def add_space_secret(self, repo_id, key, value, **kwargs):
        self.calls.append(("add_space_secret", repo_id, key, value))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {
            p.relative_to(folder_path).as_posix(): p.read_bytes() for p in Path(folder_path).rglob("*") if p.is_file()
        }
        self.calls.append(("upload_folder", repo_id, files))


@pytest.fixture
def recording_hub(monkeypatch, tmp_path):
    import huggingface_hub

    _RecordingHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingHfApi)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved token of the machine's
    return _RecordingHfApi.calls


def test_the_token_goes_to_add_space_secret_and_nowhere_else(recording_hub, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    url = deploy_module().publish("comparer", "someone/base-vs-aligned", set_token_secret=True)
    assert url.endswith("someone/base-vs-aligned")
    names = [call[0] for call in recording_hub]
    assert names.index("add_space_secret") < names.index("upload_folder")
    assert ("add_space_secret", "someone/base-vs-aligned", "HF_TOKEN", SECRET) in recording_hub
    files = next(call[2] for call in recording_hub if call[0] == "upload_folder")
    assert "app.py" in files and not [name for name, data in files.items() if SECRET.encode() in data]
    out, err = capsys.readouterr()
    assert SECRET not in caplog.text + out + err
    assert "Stored your token as the Space secret HF_TOKEN" in caplog.text


def test_without_the_flag_publish_names_the_gated_models_once(recording_hub, caplog):
    caplog.set_level(logging.INFO)
    deploy_module().publish("comparer", "someone/base-vs-aligned")
    assert "add_space_secret" not in [call[0] for call in recording_hub]
    gated = [r.getMessage() for r in caplog.records if "Gated on the Hub" in r.getMessage()]
    assert len(gated) == 1 and "\n" not in gated[0]
    assert "google/gemma-3-1b-pt" in gated[0] and "google/gemma-3-1b-it" in gated[0] and "HF_TOKEN" in gated[0]
    caplog.clear()
    deploy_module().publish("quiz", "someone/lesson")  # its only model is open: nothing to say
    assert not [r for r in caplog.records if "Gated on the Hub" in r.getMessage()]
