"""Credentials in a source spec: masked once, so no event, header, log line or outbox record carries them."""

from __future__ import annotations

import re

# user:password@ after any scheme, also inside a lavfi graph (`movie=http\://u:p@host/...`): the password runs
# to the last '@' before the path, as urlsplit reads it.
_USERINFO = re.compile(r"(://[^/@:\s]*:)[^/\s]*@")
# Query parameters that carry a secret (RTSP/HLS/SRT cameras take them as ?password=, ?token=, ?passphrase=).
_SECRET_PARAM = re.compile(
    r"([?&;](?:pass(?:word|wd|phrase)?|pwd|token|access_token|auth|key|api_?key|secret|sig(?:nature)?)=)[^&;#\s]*",
    re.IGNORECASE)


def mask_credentials(spec: str) -> str:
    """`spec` as safe to report: any URL password and any secret query value replaced by ***."""
    masked = _USERINFO.sub(r"\1***@", spec)
    return _SECRET_PARAM.sub(r"\1***", masked)
