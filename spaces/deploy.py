"""Publish an app of the collection as its own Hugging Face Space (ZeroGPU where it needs a GPU).

    python spaces/deploy.py comparer --repo-id you/base-vs-aligned          # build, then upload
    python spaces/deploy.py lora_calculator --dry-run build/lora_calculator  # only build the folder
    python spaces/deploy.py --all --repo-id you/pts                          # all apps: you/pts-<app>
    python spaces/deploy.py comparer --repo-id you/bva --set-token-secret    # + your token as its HF_TOKEN

The built folder is self-contained and runs on its own (`cd DIR && python app.py`): the app, the
modules of `shared/` it imports (found by reading its imports) with the repository files they read,
its own `requirements.txt` (pins taken from the repository's; torch at a version ZeroGPU supports, the
CPU-only wheel for CPU Spaces), and a README whose front matter configures the Space (and, for the
comparer, preloads its default models at build time). Each app's page text, look and API examples
live beside it in `spaces/<app>/space.yaml`.

Uploading uses huggingface_hub (`create_repo(repo_type="space", space_sdk="gradio")`, then
`upload_folder`). The token comes from HF_TOKEN or `hf auth login`, read by huggingface_hub itself.
Only `--set-token-secret` reads it here, to hand it to the Hub as the Space's `HF_TOKEN` secret (so the
Space can download gated models); it is never printed, logged or written into a file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
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

from shared.adapters import ADAPTERS_DIR, PROJECT_ADAPTERS  # noqa: E402
from shared.apps import APP_NAMES  # noqa: E402
from shared.cli import OneLineParser, refuse  # noqa: E402
from shared.hub import hub_user  # noqa: E402
from shared.presets import GATED_MODELS  # noqa: E402

logger = logging.getLogger("deploy")

# What ZeroGPU runs, from https://huggingface.co/docs/hub/spaces-zerogpu ("Supported versions",
# read 2026-11): Python 3.12.12 or 3.10.13; torch 2.8.0, 2.9.1, 2.10.0 or 2.11.0. transformers 5 and
# trl need Python >= 3.11, so every Space runs 3.12.12, with the newest supported torch.
ZEROGPU_PYTHON_VERSIONS = ("3.12.12", "3.10.13")
ZEROGPU_TORCH_VERSIONS = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
SPACE_PYTHON = "3.12.12"
SPACE_TORCH = "2.11.0"
# CPU Spaces install torch's CPU-only wheel: the default index's Linux wheel is the CUDA build, which
# pulls several GB of nvidia-* wheels for code that never sees a GPU. pip takes a local version label
# (`+cpu`) only with `==`, and only that index publishes it.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SPACE_TORCH_CPU = f"{SPACE_TORCH}+cpu"
SPACE_HARDWARE = ("cpu-basic", "zero-a10g")  # zero-a10g is huggingface_hub's name for ZeroGPU
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
MAX_SHORT_DESCRIPTION = 60  # characters; the Hub rejects longer ones
# Packages a module needs without importing them by name.
INDIRECT_REQUIREMENTS = {
    "shared.chat_templates": ["trl"],  # the official templates are read from trl's installed files
    "shared.embedded": ["gguf"],  # transformers needs it to convert the embedded GGUF model
}
# The project's adapters (shared.adapters): what peft loads, and the model card.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
# The Space secret gated downloads read (huggingface_hub uses HF_TOKEN from the environment).
TOKEN_SECRET = "HF_TOKEN"


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
    preload_default_pair: bool
    gated: list[str]
    api: list[dict]

    @classmethod
    def load(cls, app: str) -> "SpaceSpec":
        if app not in APP_NAMES:
            raise ValueError(f"No app named {app!r}. Choose one of: {', '.join(APP_NAMES)}.")
        raw = yaml.safe_load((SPACES_DIR / app / "space.yaml").read_text(encoding="utf-8"))
        spec = cls(
            app=app,
            color_from=raw["colorFrom"],  # the Hub's front-matter names
            color_to=raw["colorTo"],
            teaches=raw["teaches"].strip(),
            **{key: raw[key] for key in ("title", "emoji", "short_description", "hardware")},
            **{key: raw.get(key, []) for key in ("models", "datasets", "tags", "gated", "api")},
            **{key: bool(raw.get(key, False)) for key in ("mcp", "ships_adapters", "preload_default_pair")},
        )
        spec.check()
        return spec

    def check(self) -> None:
        problems = []
        if len(self.short_description) > MAX_SHORT_DESCRIPTION:
            problems.append(
                f"short_description is {len(self.short_description)} characters (max {MAX_SHORT_DESCRIPTION})"
            )
        for name, color in (("colorFrom", self.color_from), ("colorTo", self.color_to)):
            if color not in SPACE_COLORS:
                problems.append(f"{name} {color!r} is not one of {', '.join(SPACE_COLORS)}")
        if self.hardware not in SPACE_HARDWARE:
            problems.append(f"hardware {self.hardware!r} is not one of {', '.join(SPACE_HARDWARE)}")
        if not self.api:
            problems.append("no API examples")
        if unknown := sorted(set(self.gated) - set(self.models)):
            problems.append(f"gated lists models that are not in models: {', '.join(unknown)}")
        if problems:
            raise ValueError(f"spaces/{self.app}/space.yaml: " + "; ".join(problems))

    def gated_models(self) -> list[str]:
        """The Space's models a download needs an accepted licence (and a token) for: the presets' gated
        models (shared.presets, which the comparer's page names too) and any the space.yaml adds."""
        return sorted(m for m in self.models if m in GATED_MODELS or m in self.gated)


# --------------------------------------------------------------------------------------------
# What the app needs: shared modules, their data, third-party packages
# --------------------------------------------------------------------------------------------


def _imports(path: Path, module: str) -> set[str]:
    """Every module an import statement anywhere in the file may load (functions included). Relative
    imports are resolved against `module`; `from pkg import name` names both pkg and pkg.name (a
    module when it is one; callers keep only names that are files)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in names if name}


def _module_path(module: str) -> Path | None:
    """The file of a module of this repository (a package's __init__.py), or None."""
    base = REPO_DIR.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def shared_closure(app: str) -> tuple[list[str], set[str]]:
    """(the `shared` modules the app imports, directly or not, with their parent packages; the top-level
    packages of all other imports in those files)."""
    todo: list[tuple[Path, str]] = [(SPACES_DIR / app / "app.py", "app")]
    seen_files: set[Path] = set()
    modules: set[str] = set()
    third_party: set[str] = set()
    while todo:
        path, module = todo.pop()
        if path in seen_files:
            continue
        seen_files.add(path)
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top != "shared":
                third_party.add(top)
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                candidate = ".".join(parts[:depth])
                module_path = _module_path(candidate)
                if module_path is not None and candidate not in modules:
                    modules.add(candidate)
                    todo.append((module_path, candidate))
    return sorted(modules), third_party


# Where a module's paths start, as written in this repository's modules: the file's own folder, the
# repository root (`REPO_DIR`) or the adapters' folder (`ADAPTERS_DIR`, from shared.adapters).
_PATH_ROOTS = {
    "Path(__file__).parent": lambda module_dir: module_dir,
    "Path(__file__).resolve().parent": lambda module_dir: module_dir,
    "REPO_DIR": lambda module_dir: REPO_DIR,
    "ADAPTERS_DIR": lambda module_dir: ADAPTERS_DIR,
}


def repo_files_read(module_path: Path) -> set[Path]:
    """Files and folders of the repository a module reads, found as path expressions in its source:
    `ROOT / "a" / "b.yaml"` with ROOT one of `_PATH_ROOTS` and every other part a string literal. Only
    paths that exist are returned (a file a module only writes, such as a measured result not yet
    computed, is skipped); folders only under shared/data."""
    tree = ast.parse(module_path.read_text(encoding="utf-8"))
    divisions = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)]
    inner = {id(n.left) for n in divisions}  # a chain's prefixes are its left operands: keep whole chains
    found: set[Path] = set()
    for node in divisions:
        if id(node) in inner:
            continue
        parts: list[str] = []
        left = node
        while isinstance(left, ast.BinOp) and isinstance(left.op, ast.Div):
            if not (isinstance(left.right, ast.Constant) and isinstance(left.right.value, str)):
                break
            parts.insert(0, left.right.value)
            left = left.left
        else:
            root = _PATH_ROOTS.get(ast.unparse(left))
            if root is None:
                continue
            path = root(module_path.parent).joinpath(*parts).resolve()
            if REPO_DIR not in path.parents or not path.exists():
                continue
            if path.is_dir() and (REPO_DIR / "shared" / "data") not in path.parents:
                continue  # whole folders only of the apps' own data, never e.g. train/ checkpoints
            found.add(path)
    return {path for path in found if not any(folder in path.parents for folder in found)}


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
    """The Space's requirements.txt lines: every distribution its files import, pinned as in the
    repository, and torch at a version ZeroGPU runs (the CPU-only wheel, from its index, on CPU Spaces)."""
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
        wanted.add("torch")  # pulled in by another package: pin it anyway, to the build this Space needs
    lines = []
    for name in sorted(wanted):
        if name not in pins and name in brought and name != "torch":
            continue  # installed anyway as a dependency of a pinned package (e.g. filelock, tqdm)
        if name == "torch" and spec.hardware == "cpu-basic":
            lines = [f"--extra-index-url {TORCH_CPU_INDEX}", *lines]
            lines.append(f"torch=={SPACE_TORCH_CPU}  # the CPU-only wheel, from the index above")
        elif name == "torch":
            lines.append(f"torch=={SPACE_TORCH}  # the CUDA build, a version ZeroGPU supports")
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


def space_default_pair(repo_id: str) -> list[str]:
    """[base, aligned] repo ids the comparer loads first on a Space: shared/presets.py read as the Hub
    runs it (the Hub sets SPACE_ID), in a child process so this one's settings stay as they are."""
    code = (
        "import json; from shared.presets import DEFAULT_PAIR, PRESETS; "
        "pair = PRESETS[DEFAULT_PAIR]; print(json.dumps([pair.base_id, pair.aligned_id]))"
    )
    env = dict(os.environ, SPACE_ID=repo_id, PYTHONPATH=str(REPO_DIR))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"shared/presets.py could not be read as on a Space: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def front_matter(spec: SpaceSpec, repo_id: str = "your-name/your-space") -> dict:
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
    if spec.preload_default_pair:
        # Downloaded while the Space builds, into the cache huggingface_hub reads, so the first visitor
        # does not wait for ~2 GB per model. Whole repos: Gemma 3 1B's hold one weights file, its config
        # and the tokenizer, all of which loading reads; naming files would miss any the repo adds.
        matter["preload_from_hub"] = space_default_pair(repo_id)
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
        "It runs on ZeroGPU: a request borrows a GPU only while it generates (its `@spaces.GPU` call, booked "
        "for about as long as the request needs, from the visitor's daily ZeroGPU quota); without ZeroGPU it "
        "runs on the CPU."
        if spec.hardware == "zero-a10g"
        else "It needs no GPU (it installs torch's CPU-only wheel)."
    )
    gated = ""
    if models := spec.gated_models():
        gated = (
            "\n## Gated models\n\n"
            + ", ".join(f"`{m}`" for m in models)
            + " are gated on the Hub: downloading them needs a token from an account that accepted their licence. "
            f'Give the Space one as the secret `{TOKEN_SECRET}` (Settings, then "Variables and secrets"; '
            f"`python spaces/deploy.py {spec.app} --repo-id ... --set-token-secret` does it for you). Without it the "
            "Space says so on its page and serves what it can without them.\n"
        )
    body = f"""# {spec.emoji} {spec.title}

{spec.teaches}

{hardware} Part of **Post-Training Spaces**, a set of apps that show with real models how a pretrained
base LLM becomes an assistant.
{gated}
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
    return "---\n" + yaml.safe_dump(front_matter(spec, repo_id), sort_keys=False, allow_unicode=True) + "---\n\n" + body


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
    read: set[Path] = set()
    for module in modules:
        source = _module_path(module)
        _copy(source, out)
        read |= repo_files_read(source)
    for path in sorted(read):
        _copy(path, out)

    if spec.ships_adapters:
        for adapter in PROJECT_ADAPTERS.values():
            for file in ADAPTER_FILES:
                _copy(ADAPTERS_DIR / adapter.folder / file, out)

    requirements = requirements_for(spec, modules, third_party)
    (out / "requirements.txt").write_text(
        f"# Built by spaces/deploy.py for the {app} Space; gradio itself also comes from sdk_version.\n"
        + "\n".join(requirements)
        + "\n",
        encoding="utf-8",
    )
    (out / "README.md").write_text(readme(spec, repo_id), encoding="utf-8")
    (out / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    files = ", ".join(p.relative_to(REPO_DIR).as_posix() for p in sorted(read)) or "none"
    logger.info("Built %s in %s (%d shared modules; files they read: %s)", app, out, len(modules), files)
    return out


def _copy(path: Path, out: Path) -> None:
    """A file or folder of the repository copied to the same place under `out`."""
    target = out / path.relative_to(REPO_DIR)
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
    else:
        shutil.copy2(path, target)


def publish(app: str, repo_id: str, *, private: bool = False, set_token_secret: bool = False) -> str:
    """Build the Space, create (or reuse) the repo, ask for its hardware, store the token secret when
    asked, upload. Returns its URL.

    With `set_token_secret` the deployer's own token (HF_TOKEN or `hf auth login`, read by
    huggingface_hub) becomes the Space's `HF_TOKEN` secret before the upload, so the first build can
    already preload gated models. It is handed to the Hub and to nothing else: never printed, logged or
    written into the built folder.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    spec = SpaceSpec.load(app)
    user = hub_user()  # fails here, with a clear message, before anything is built or created
    logger.info("Publishing %s to %s as %s", app, repo_id, user)
    token = get_token() if set_token_secret else None
    if set_token_secret and not token:
        raise ValueError("--set-token-secret needs a token: set HF_TOKEN or run `hf auth login`.")
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
                    "choose ZeroGPU in its Settings once the account allows.",
                    spec.hardware,
                    repo_id,
                    _hub_reason(exc),
                )
        gated = spec.gated_models()
        if token:
            try:
                api.add_space_secret(
                    repo_id,
                    TOKEN_SECRET,
                    token,
                    description="Read access to gated models, set by spaces/deploy.py --set-token-secret",
                )
            except HfHubHTTPError as exc:
                reason = _hub_reason(exc).replace(token, "[token]")
                raise ValueError(f"The Hub would not store the {TOKEN_SECRET} secret of {repo_id}: {reason}") from None
            logger.info("Stored your token as the Space secret %s (the value is not shown)", TOKEN_SECRET)
        elif gated:
            logger.info(
                "Gated on the Hub: %s. Without the %s secret (--set-token-secret) the Space cannot download "
                "them: it says so on its page and falls back to what it can serve.",
                ", ".join(gated),
                TOKEN_SECRET,
            )
        try:
            api.upload_folder(
                repo_id=repo_id,
                repo_type="space",
                folder_path=str(folder),
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
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", choices=APP_NAMES, help="the app to publish (or --all)")
    parser.add_argument("--all", action="store_true", help="all apps; --repo-id is then a prefix: PREFIX-<app>")
    parser.add_argument("--repo-id", help="USER/NAME of the Space")
    parser.add_argument("--dry-run", metavar="DIR", help="only build the Space folder(s) into DIR")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument(
        "--set-token-secret",
        action="store_true",
        help=f"store your Hugging Face token as the Space's {TOKEN_SECRET} secret, so it can download the gated "
        "models it uses (use a read-only token from an account that accepted their licences)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per HTTP request is noise here
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if bool(args.app) == args.all:
        parser.error("name one app, or pass --all")
    apps = APP_NAMES if args.all else [args.app]
    if not args.dry_run and not args.repo_id:
        parser.error("--repo-id USER/NAME is needed to publish (or use --dry-run DIR to only build)")
    if args.set_token_secret and args.dry_run:
        parser.error("--set-token-secret only applies when publishing, not with --dry-run")
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
                url = publish(app, repo_for(app), private=args.private, set_token_secret=args.set_token_secret)
                print(f"{app}: {url}")
    except ValueError as exc:
        return refuse(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
