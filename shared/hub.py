"""Who is logged in to the Hub, asked before any long work that ends by pushing to it.

The token comes from HF_TOKEN or the saved `hf auth login`, read by huggingface_hub itself: it is
never read, printed or logged here. Every failure becomes one `ValueError` that says what to do.
"""

from __future__ import annotations


def hub_user() -> str:
    """The user name the Hub sees for the current token."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    try:
        user = HfApi().whoami()
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
