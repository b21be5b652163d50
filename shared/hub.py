"""The Hugging Face Hub, asked carefully: is it reachable, who is logged in, and why a load failed.

The token comes from HF_TOKEN or the saved `hf auth login`, read by huggingface_hub itself: it is never
read, printed or logged here. Every failure becomes one `ValueError` (or one sentence) that says what to do.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A dead network makes huggingface_hub retry for ~25 s per file; one quick probe avoids that.
_HUB_PROBE_TIMEOUT_S = 3.0
HUB_PROBE_TTL_S = 60.0
# Longest text of a visitor's we ever echo into a message or a log line (characters).
_MAX_SHOWN_CHARS = 96

_hub_probe_lock = threading.Lock()
_hub_probe: tuple[float, str | None] = (0.0, None)


def hub_unavailable_reason() -> str | None:
    """Why the Hub cannot be used right now (None when it can). Probed quickly, cached for a minute."""
    global _hub_probe
    if hub_constants.HF_HUB_OFFLINE:
        return "the Hugging Face Hub is switched off (HF_HUB_OFFLINE=1)"
    with _hub_probe_lock:
        checked_at, reason = _hub_probe
        if time.monotonic() - checked_at < HUB_PROBE_TTL_S:
            return reason
        import httpx

        try:
            httpx.head(hub_constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
            reason = None
        except httpx.HTTPError as exc:
            reason = f"the Hugging Face Hub cannot be reached ({type(exc).__name__})"
        _hub_probe = (time.monotonic(), reason)
        return reason


def shown(text: str) -> str:
    """A visitor's text made safe to echo in one line of a message or a log: control characters
    (newlines that would forge log lines, escapes) become `?`, and it is cut to a few dozen characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 1] + "…"


def _exception_chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain_load_failure(model_id: str, exc: BaseException) -> str:
    """Turn a Hub/transformers loading error into one sentence a user can act on (no server paths)."""
    model_id = shown(model_id)
    chain = list(_exception_chain(exc))
    if any(isinstance(e, hub_errors.GatedRepoError) for e in chain):
        return f"`{model_id}` is gated: accept its licence on the Hub and set HF_TOKEN to a token with access"
    if any(isinstance(e, (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError)) for e in chain):
        return f"`{model_id}` does not exist on the Hub (or is private): check the spelling"
    if any(isinstance(e, hub_errors.OfflineModeIsEnabled) for e in chain) or hub_constants.HF_HUB_OFFLINE:
        return f"the Hub is switched off (HF_HUB_OFFLINE=1) and `{model_id}` is not in the local cache"
    if any(isinstance(e, hub_errors.LocalEntryNotFoundError) for e in chain):
        return f"the Hub cannot be reached and `{model_id}` is not in the local cache"
    message = " ".join(str(exc).split())
    if "trust_remote_code" in message:
        return f"`{model_id}` needs custom code (trust_remote_code), which these apps never run"
    if "does not appear to have a file named config.json" in message or "not a valid model identifier" in message:
        return f"`{model_id}` is not a transformers model repository"
    # Library messages can carry local paths (the cache folder, a file): name the error type only.
    return f"`{model_id}` could not be loaded ({type(exc).__name__})"


def hub_or_cache(model_id: str, load: Callable[[bool], T]) -> T:
    """`load(local_only)` against the Hub, or its local cache when the Hub cannot be reached.

    Any failure becomes one `ValueError` whose message is a sentence without a trailing full stop
    (callers add their own context), e.g. "`org/x` is gated: accept its licence ...".
    """
    unavailable = hub_unavailable_reason()
    try:
        return load(unavailable is not None)
    except Exception as exc:  # any failure to load becomes one sentence the user can act on
        reason = explain_load_failure(model_id, exc)
        if unavailable and "local cache" in reason:
            reason = f"{unavailable} and `{shown(model_id)}` is not in the local cache"
        raise ValueError(reason) from exc


def hub_user(token: str | None = None) -> str:
    """The user name the Hub sees for `token` (default: HF_TOKEN or the saved login). The token is passed
    to huggingface_hub and nowhere else."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    try:
        user = HfApi(token=token).whoami()
    except LocalTokenNotFoundError:
        raise ValueError("No Hugging Face token: set HF_TOKEN or run `hf auth login` before pushing.") from None
    except OfflineModeIsEnabled:
        raise ValueError("HF_HUB_OFFLINE=1 is set, so nothing can be pushed: unset it first.") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ValueError(f"The Hub refused the token ({status}): check HF_TOKEN.") from None
    except Exception as exc:  # network failures come in many types; all mean the same here
        raise ValueError(f"The Hub cannot be reached ({type(exc).__name__}): pushing would fail.") from None
    return user.get("name", "?")
