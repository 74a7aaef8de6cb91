"""Access tokens: one place that knows about PyJWT's warning for the dev secret."""

from __future__ import annotations

import re
import warnings

#: The secret ``livekit-server --dev`` documents (and the stand-in defaults to).
DEV_API_SECRET = "secret"


def quiet_dev_secret_warning(secret: str) -> None:
    """Silence PyJWT's short-key warning when the secret is ``livekit-server --dev``'s.

    PyJWT warns on every token signed or verified with an HMAC key shorter than
    32 bytes; with the documented dev secret (6 bytes) that is two lines per
    token in users' tests and job processes.  The filter matches only a 6-byte
    key, so a real deployment's short secret still warns.  Called before each
    use (adding the same filter again only moves it to the front, so a test
    runner that resets the filters between tests gets it back); a global filter
    rather than ``catch_warnings``, whose restore is not thread-safe.
    """
    if secret != DEV_API_SECRET:
        return
    warnings.filterwarnings("ignore", message=r"The HMAC key is 6 bytes long", category=UserWarning)


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def redact_tokens(text: str) -> str:
    """``text`` without the tokens in it: LiveKit's 401 body quotes the whole token.

    A token refused only because it expired or is not valid yet is still a
    credential; error lines and logs must not carry it.
    """
    return _JWT.sub("<token>", text)
