"""The collection's apps, and how to import `spaces/<name>/app.py` by file path.

Every app module offers the same surface: `demo` (its `gr.Blocks`), `TITLE` (its tab title) and
`warm_up()` (starts any background warm-up and returns at once). Adding an app is its folder plus one
line in `APP_NAMES`. The folder is called `spaces/` like the Hub's, so it must not become a Python
package: `import spaces` has to keep meaning the ZeroGPU package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
# Tab order in the collection follows the lesson: the completion trap, chat templates, the memory
# wall and LoRA, log-probabilities as what SFT and DPO optimise, then the lesson to check understanding.
APP_NAMES = [
    "comparer",
    "chat_template_inspector",
    "lora_calculator",
    "logprob_lens",
    "quiz",
]
# What every app module must define.
APP_PROTOCOL = ("demo", "TITLE", "warm_up")


def mcp_available() -> bool:
    """True when gradio's `mcp` extra is installed: apps then also serve their endpoints as MCP tools."""
    return importlib.util.find_spec("mcp") is not None


def load_app(name: str) -> ModuleType:
    """Import `spaces/<name>/app.py` once and return the module (its `demo` is a `gr.Blocks`)."""
    module_name = f"pts_app_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = SPACES_DIR / name / "app.py"
    if not path.is_file():
        raise ValueError(f"No app named {name!r}: expected {path}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    missing = [name for name in APP_PROTOCOL if not hasattr(module, name)]
    if missing:
        del sys.modules[module_name]
        raise ValueError(f"spaces/{name}/app.py does not define {', '.join(missing)}")
    return module
