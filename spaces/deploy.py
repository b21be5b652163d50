"""Publish an app of the collection as its own Hugging Face Space (ZeroGPU where it needs a GPU).

    python spaces/deploy.py comparer --repo-id you/base-vs-aligned          # build, then upload
    python spaces/deploy.py lora_calculator --dry-run build/lora_calculator  # only build the folder
    python spaces/deploy.py --all --repo-id you/pts                          # all four: you/pts-<app>

The built folder is self-contained and runs on its own (`cd DIR && python app.py`): the app, the
modules of `shared/` it imports (found by reading its imports) with their data, its own
`requirements.txt` (pins taken from the repository's, torch at a version ZeroGPU supports), and a
README whose front matter configures the Space. Each app's page text, look and API examples live
beside it in `spaces/<app>/space.yaml`.

Uploading uses huggingface_hub (`create_repo(repo_type="space", space_sdk="gradio")`, then
`upload_folder`). The token comes from HF_TOKEN or `hf auth login`, read by huggingface_hub itself:
this script never reads, prints or logs it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import logging
import re
import shutil
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO_DIR = Path(__file__).resolve().parent.parent
SPACES_DIR = REPO_DIR / "spaces"
sys.path.insert(0, str(REPO_DIR))  # run as a script: make `shared` importable from the checkout

from shared.apps import APP_NAMES  # noqa: E402
from shared.hub import hub_user  # noqa: E402

logger = logging.getLogger("deploy")

# What ZeroGPU runs, from https://huggingface.co/docs/hub/spaces-zerogpu ("Supported versions",
# read 2026-11): Python 3.12.12 or 3.10.13; torch 2.8.0, 2.9.1, 2.10.0 or 2.11.0. transformers 5 and
# trl need Python >= 3.11, so every Space runs 3.12.12, with the newest supported torch.
ZEROGPU_PYTHON_VERSIONS = ("3.12.12", "3.10.13")
ZEROGPU_TORCH_VERSIONS = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
SPACE_PYTHON = "3.12.12"
SPACE_TORCH = "2.11.0"
SPACE_HARDWARE = ("cpu-basic", "zero-a10g")  # zero-a10g is huggingface_hub's name for ZeroGPU
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
MAX_SHORT_DESCRIPTION = 60  # characters; the Hub rejects longer ones
# Packages a module needs without importing them by name.
INDIRECT_REQUIREMENTS = {
    "shared.chat_templates": ["trl"],  # the official templates are read from trl's installed files
    "shared.models": ["gguf"],  # transformers needs it to read the embedded GGUF model
}
# The project's adapters: the comparer serves them next to the base (shared.models.ADAPTERS_DIR).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


@dataclass
class SpaceSpec:
    app: str
    title: str
    emoji: str
    color_from: str
    color_to: str
    short_description: str
    hardware: str
    teaches: str
    models: list[str]
    datasets: list[str]
    tags: list[str]
    mcp: bool
    ships_adapters: bool
    api: list[dict]

    @classmethod
    def load(cls, app: str) -> "SpaceSpec":
        if app not in APP_NAMES:
            raise ValueError(f"No app named {app!r}. Choose one of: {', '.join(APP_NAMES)}.")
        raw = yaml.safe_load((SPACES_DIR / app / "space.yaml").read_text(encoding="utf-8"))
        spec = cls(
            app=app, title=raw["title"], emoji=raw["emoji"], color_from=raw["colorFrom"], color_to=raw["colorTo"],
            short_description=raw["short_description"], hardware=raw["hardware"], teaches=raw["teaches"].strip(),
            models=raw.get("models", []), datasets=raw.get("datasets", []), tags=raw.get("tags", []),
            mcp=bool(raw.get("mcp", False)), ships_adapters=bool(raw.get("ships_adapters", False)),
            api=raw.get("api", []),
        )
        spec.check()
        return spec

    def check(self) -> None:
        problems = []
        if len(self.short_description) > MAX_SHORT_DESCRIPTION:
            problems.append(f"short_description is {len(self.short_description)} characters (max {MAX_SHORT_DESCRIPTION})")
        for name, color in (("colorFrom", self.color_from), ("colorTo", self.color_to)):
            if color not in SPACE_COLORS:
                problems.append(f"{name} {color!r} is not one of {', '.join(SPACE_COLORS)}")
        if self.hardware not in SPACE_HARDWARE:
            problems.append(f"hardware {self.hardware!r} is not one of {', '.join(SPACE_HARDWARE)}")
        if not self.api:
            problems.append("no API examples")
        if problems:
            raise ValueError(f"spaces/{self.app}/space.yaml: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# What the app needs: shared modules, their data, third-party packages
# --------------------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "shared":  # `from shared import x` imports the module shared.x
                names.update(f"shared.{alias.name}" for alias in node.names)
    return names


def _module_path(module: str) -> Path | None:
    path = REPO_DIR.joinpath(*module.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def shared_closure(app: str) -> tuple[list[str], set[str]]:
    """(the `shared.*` modules the app imports, directly or not; the top-level packages of all
    other imports in those files)."""
    todo = [SPACES_DIR / app / "app.py"]
    seen_files: set[Path] = set()
    modules: set[str] = set()
    third_party: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen_files:
            continue
        seen_files.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "shared":
                module_path = _module_path(name)
                if module_path is not None and name not in modules:
                    modules.add(name)
                    todo.append(module_path)
            else:
                third_party.add(top)
    return sorted(modules), third_party


def _data_dirs(module_path: Path) -> set[str]:
    """Folders of shared/data a module reads: it names them as `"data" / "<folder>"`."""
    return set(re.findall(r'"data"\s*/\s*"([\w-]+)"', module_path.read_text(encoding="utf-8")))


def _repo_pins() -> dict[str, Requirement]:
    """The repository's requirements.txt, by normalised distribution name."""
    pins = {}
    for line in (REPO_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            pins[_normalise(req.name)] = req
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_for(spec: SpaceSpec, modules: list[str], third_party: set[str]) -> list[str]:
    """The Space's requirements.txt lines: every imported distribution, pinned as in the repository."""
    stdlib = set(sys.stdlib_module_names)
    distributions = importlib.metadata.packages_distributions()
    wanted: set[str] = set()
    for top in third_party - stdlib - {"__future__"}:
        if top not in distributions:
            raise ValueError(f"{spec.app} imports {top!r}, which no installed distribution provides")
        wanted.update(_normalise(d) for d in distributions[top])
    for module in modules:
        wanted.update(INDIRECT_REQUIREMENTS.get(module, []))
    pins = _repo_pins()
    pinned = {name for name in wanted if name in pins}
    brought = _dependencies_of(pinned)
    if "torch" in brought:
        wanted.add("torch")  # pulled in by another package: pin it anyway, to a version ZeroGPU runs
    lines = []
    for name in sorted(wanted):
        if name not in pins and name in brought and name != "torch":
            continue  # installed anyway as a dependency of a pinned package (e.g. filelock, tqdm)
        if name == "torch":
            lines.append(f"torch=={SPACE_TORCH}  # a version ZeroGPU supports")
        elif name == "gradio":
            extras = "[mcp]" if spec.mcp else ""
            lines.append(f"gradio{extras}=={gradio_pin()}")
        elif name in pins:
            lines.append(f"{pins[name].name}{pins[name].specifier}")
        else:
            raise ValueError(f"{spec.app} needs {name!r}, which the repository's requirements.txt does not pin")
    return lines


def _dependencies_of(names: set[str]) -> set[str]:
    """Every distribution the installed `names` pull in (unconditional requirements, recursively)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_normalise(req.name))
    return seen


def gradio_pin() -> str:
    return str(_repo_pins()["gradio"].specifier).lstrip("=")


# --------------------------------------------------------------------------------------------
# The Space's README
# --------------------------------------------------------------------------------------------

def front_matter(spec: SpaceSpec) -> dict:
    matter = {
        "title": spec.title,
        "emoji": spec.emoji,
        "colorFrom": spec.color_from,
        "colorTo": spec.color_to,
        "sdk": "gradio",
        "sdk_version": gradio_pin(),
        "python_version": SPACE_PYTHON,
        "app_file": "app.py",
        "short_description": spec.short_description,
        "pinned": False,
        "license": "apache-2.0",
        "models": spec.models,
        "datasets": spec.datasets,
        "tags": spec.tags,
    }
    if spec.hardware != "cpu-basic":
        matter["suggested_hardware"] = spec.hardware  # what a duplicate of the Space asks for
    return {k: v for k, v in matter.items() if v != []}


def readme(spec: SpaceSpec, repo_id: str) -> str:
    api_sections = []
    for example in spec.api:
        code = textwrap.dedent(example["code"]).strip().replace("{space}", repo_id)
        api_sections.append(f"### `{example['endpoint']}`\n\n{example['about'].strip()}\n\n```python\n{code}\n```")
    mcp = ""
    if spec.mcp:
        mcp = (
            "\n## Use as MCP tools\n\n"
            "The Space is also an MCP server (gradio's `mcp` extra is in its requirements): point an MCP client "
            f"at `https://{repo_id.replace('/', '-').replace('_', '-').lower()}.hf.space/gradio_api/mcp/` "
            "(streamable HTTP; `…/gradio_api/mcp/sse` for SSE clients). Its tools are the endpoints above, "
            "described from their docstrings.\n"
        )
    hardware = (
        "It runs on ZeroGPU: each request borrows a GPU for its `@spaces.GPU` call; without one it runs on the CPU."
        if spec.hardware == "zero-a10g" else "It needs no GPU."
    )
    body = f"""# {spec.emoji} {spec.title}

{spec.teaches}

{hardware} Part of **Post-Training Spaces**, a set of apps that show with real models how a pretrained
base LLM becomes an assistant.

## Use via API

Install the client with `pip install gradio_client`. Every endpoint is named; the full list, with types,
is under "Use via API" at the bottom of the Space.

{chr(10).join(api_sections)}
{mcp}
## Run it yourself

```bash
pip install -r requirements.txt
python app.py
```
"""
    return "---\n" + yaml.safe_dump(front_matter(spec), sort_keys=False, allow_unicode=True) + "---\n\n" + body


# --------------------------------------------------------------------------------------------
# Build and publish
# --------------------------------------------------------------------------------------------

def build(app: str, out_dir: Path | str, repo_id: str = "your-name/your-space") -> Path:
    """Write the Space for `app` into `out_dir` (emptied first) and return it."""
    spec = SpaceSpec.load(app)
    out = Path(out_dir).resolve()
    inside_repo = out == REPO_DIR or REPO_DIR in out.parents
    if out in REPO_DIR.parents or (inside_repo and (REPO_DIR / "build") not in out.parents):
        # The folder is emptied first: only ever a fresh place, never the checkout itself.
        raise ValueError(f"Build the Space outside the repository or under build/, not in {out}.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(SPACES_DIR / app / "app.py", out / "app.py")

    modules, third_party = shared_closure(app)
    (out / "shared").mkdir()
    shutil.copy2(REPO_DIR / "shared" / "__init__.py", out / "shared" / "__init__.py")
    data_dirs: set[str] = set()
    for module in modules:
        source = _module_path(module)
        shutil.copy2(source, out / source.relative_to(REPO_DIR))
        data_dirs |= _data_dirs(source)
    for folder in sorted(data_dirs):
        shutil.copytree(REPO_DIR / "shared" / "data" / folder, out / "shared" / "data" / folder)

    if spec.ships_adapters:
        from shared.models import ADAPTERS_DIR, PROJECT_ADAPTERS

        for name in PROJECT_ADAPTERS.values():
            target = out / "train" / "adapters" / name
            target.mkdir(parents=True)
            for file in ADAPTER_FILES:
                shutil.copy2(ADAPTERS_DIR / name / file, target / file)

    requirements = requirements_for(spec, modules, third_party)
    (out / "requirements.txt").write_text(
        f"# Built by spaces/deploy.py for the {app} Space; gradio itself also comes from sdk_version.\n"
        + "\n".join(requirements) + "\n",
        encoding="utf-8",
    )
    (out / "README.md").write_text(readme(spec, repo_id), encoding="utf-8")
    (out / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    logger.info("Built %s in %s (%d shared modules, data: %s)", app, out, len(modules), ", ".join(sorted(data_dirs)) or "none")
    return out


def publish(app: str, repo_id: str, *, private: bool = False) -> str:
    """Build the Space, create (or reuse) the repo, ask for its hardware, upload. Returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    spec = SpaceSpec.load(app)
    user = hub_user()  # fails here, with a clear message, before anything is built or created
    logger.info("Publishing %s to %s as %s", app, repo_id, user)
    with tempfile.TemporaryDirectory(prefix=f"space-{app}-") as tmp:
        folder = build(app, Path(tmp) / app, repo_id)
        api = HfApi()
        try:
            url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        except HfHubHTTPError as exc:
            raise ValueError(f"The Hub would not create the Space {repo_id}: {_hub_reason(exc)}") from None
        if spec.hardware != "cpu-basic":
            try:
                api.request_space_hardware(repo_id, spec.hardware)
                logger.info("Asked for %s hardware", spec.hardware)
            except HfHubHTTPError as exc:
                logger.warning(
                    "The Hub refused %s hardware for %s (%s). ZeroGPU needs a PRO account or a Team/Enterprise "
                    "organisation. The Space will run on the free CPU instead (slowly, with the same answers); "
                    "choose ZeroGPU in its Settings once the account allows.", spec.hardware, repo_id, _hub_reason(exc),
                )
        try:
            api.upload_folder(
                repo_id=repo_id, repo_type="space", folder_path=str(folder),
                commit_message=f"Deploy {app} from Post-Training Spaces",
            )
        except HfHubHTTPError as exc:
            raise ValueError(f"Uploading to {repo_id} failed: {_hub_reason(exc)}") from None
    logger.info("Published: %s", url)
    return str(url)


def _hub_reason(exc) -> str:
    """The Hub's own message for a refused request: HTTP status and its error text, never headers."""
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else "no response"
    detail = (response.headers.get("X-Error-Message") if response is not None else None) or str(exc).splitlines()[0]
    return f"HTTP {status}: {detail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", choices=APP_NAMES, help="the app to publish (or --all)")
    parser.add_argument("--all", action="store_true", help="all four apps; --repo-id is then a prefix: PREFIX-<app>")
    parser.add_argument("--repo-id", help="USER/NAME of the Space")
    parser.add_argument("--dry-run", metavar="DIR", help="only build the Space folder(s) into DIR")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per HTTP request is noise here
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if bool(args.app) == args.all:
        parser.error("name one app, or pass --all")
    apps = APP_NAMES if args.all else [args.app]
    if not args.dry_run and not args.repo_id:
        parser.error("--repo-id USER/NAME is needed to publish (or use --dry-run DIR to only build)")
    if args.repo_id and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repo_id):
        parser.error(f"--repo-id must look like USER/NAME, not {args.repo_id!r}")

    def repo_for(app: str) -> str:
        if not args.repo_id:
            return "your-name/" + app.replace("_", "-")
        return f"{args.repo_id}-{app.replace('_', '-')}" if args.all else args.repo_id

    try:
        for app in apps:
            if args.dry_run:
                target = Path(args.dry_run) / app if args.all else Path(args.dry_run)
                build(app, target, repo_for(app))
                print(f"{app}: built in {target} (run it with: cd {target} && python app.py)")
            else:
                print(f"{app}: {publish(app, repo_for(app), private=args.private)}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
