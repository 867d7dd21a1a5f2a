"""Secrets kept off the command line and out of messages.

Every local user can read another's command line (`ps`), so passwords and tokens come from a file or the
environment (`secret`): `trainer`/`sync` `--password-file` and `[sync] password_file`, else `$EDGEOMNI_MQTT_PASSWORD`
for a broker URL that names a user but no password; `serve --token-file`, else `$EDGEOMNI_SERVE_TOKEN`. A URL with
a password given on the command line still works, with a warning (`warn_secrets_in_argv`). Anything that prints a
URL prints `redact_url(url)`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeomni.errors import ConfigError

MQTT_PASSWORD_ENV = "EDGEOMNI_MQTT_PASSWORD"
SERVE_TOKEN_ENV = "EDGEOMNI_SERVE_TOKEN"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def redact_url(value: str) -> str:
    """scheme://user:password@host... -> scheme://user:***@host... (any scheme, any case; a password may hold
    `@` or an unescaped `/`, so the user part ends at the last `@`). Anything else is returned as it is."""
    scheme, sep, rest = value.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme) or "@" not in rest:
        return value
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, _, host = rest[:end].rpartition("@") if "@" in rest[:end] else rest.rpartition("@")
    if ":" not in userinfo:
        return value
    tail = rest[end:] if "@" in rest[:end] else ""
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{tail}"


def has_password(value: str) -> bool:
    return redact_url(value) != value


def warn_secrets_in_argv(argv: Sequence[str]) -> None:
    """A warning (stderr) for each command-line URL that carries a password, and for a token given as an
    option: every user of the machine can read them."""
    for arg in argv:
        option, _, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if has_password(value):
            print(f"edgeomni: warning: the password in {redact_url(value)} is visible to every user of this machine "
                  f"(ps); give it with --password-file FILE, ${MQTT_PASSWORD_ENV} or a config file instead",
                  file=sys.stderr)
        elif (option or arg) == "--token":
            print(f"edgeomni: warning: --token on the command line is visible to every user of this machine (ps); "
                  f"give it with --token-file FILE or ${SERVE_TOKEN_ENV} instead", file=sys.stderr)


def read_secret(path: str | Path, where: str) -> str:
    """The first line of a secret file (a trailing newline is not part of the secret)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path} ({exc})") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"{where}: {path} is empty")
    return secret


def secret(given: str | None, path: str | Path | None, env: str, where: str) -> str | None:
    """A secret from the option itself, else its file, else the environment variable `env`; None if none."""
    if given:
        return given
    if path:
        return read_secret(path, where)
    return os.environ.get(env) or None
