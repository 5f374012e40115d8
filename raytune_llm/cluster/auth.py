"""Ray token authentication from the client side, and keeping the token out of output.

A cluster started with `RAY_AUTH_MODE=token` (Ray >= 2.52; on by default for local
`ray.init` clusters since 2.59) rejects dashboard and Jobs API requests that lack the
header `Authorization: Bearer <token>` (401) or carry another token (403). Ray's own
clients look for the token in `RAY_AUTH_TOKEN`, then the file named by
`RAY_AUTH_TOKEN_PATH`, then `~/.ray/auth_token` (what `ray get-auth-token --generate`
writes). We use the same order, after our own `--token` / `--token-file` flags, and pass
the header explicitly to `JobSubmissionClient(headers=...)`, so it works whether or not
this process has `RAY_AUTH_MODE` set. The token value is never printed: `Token` hides it
in its repr, and everything we print goes through `mask`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from raytune_llm.errors import RaytuneLLMError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
MASK = "****"


class AuthError(RaytuneLLMError):
    """No usable token, or the cluster refused the one we sent."""


@dataclass(frozen=True)
class Token:
    """A bearer token and where it came from (the source is safe to print, the value is not)."""

    value: str = field(repr=False)
    source: str

    def headers(self) -> dict[str, str]:
        """The HTTP header Ray's dashboard checks."""
        return {"Authorization": f"Bearer {self.value}"}


def default_token_path(home: Path | None = None) -> Path:
    """Where `ray get-auth-token --generate` stores the token."""
    return (home or Path.home()) / ".ray" / "auth_token"


def resolve_token(token: str | None = None, token_file: str | None = None,
                  environ: Mapping[str, str] | None = None, home: Path | None = None) -> Token | None:
    """The token to send: --token, --token-file, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token.

    Returns None when none is set (fine for clusters without token authentication).
    A named file that cannot be read is an error, as in Ray: silently sending no token
    would only turn into a confusing 401 later.
    """
    env = os.environ if environ is None else environ
    if token:
        return Token(token.strip(), "--token")
    if token_file:
        return Token(_read_token_file(Path(token_file).expanduser(), "--token-file"), f"--token-file {token_file}")
    if env.get(TOKEN_ENV, "").strip():
        return Token(env[TOKEN_ENV].strip(), TOKEN_ENV)
    if env.get(TOKEN_PATH_ENV):
        path = Path(env[TOKEN_PATH_ENV]).expanduser()
        return Token(_read_token_file(path, TOKEN_PATH_ENV), f"{TOKEN_PATH_ENV}={path}")
    default = default_token_path(home)
    if default.is_file():
        value = default.read_text(encoding="utf-8").strip()
        if value:
            return Token(value, str(default))
    return None


def _read_token_file(path: Path, flag: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AuthError(f"{flag}: cannot read token file {path}: {exc.strerror or exc}") from None
    if not value:
        raise AuthError(f"{flag}: token file {path} is empty")
    return value


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret replaced by ****."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def auth_failure(status: int, address: str, token: Token | None) -> AuthError:
    """The message for a 401/403 from the cluster, naming the fix but never the token."""
    if status == 401 or token is None:
        return AuthError(
            f"the cluster at {address} requires token authentication (RAY_AUTH_MODE=token) and no token "
            f"was sent. Pass --token-file PATH, set {TOKEN_ENV} or {TOKEN_PATH_ENV}, or put the token in "
            f"{default_token_path()} (on the head node `ray get-auth-token` prints it)")
    return AuthError(
        f"the cluster at {address} rejected the token from {token.source} (HTTP {status}): it is not "
        f"this cluster's token. Get the right one with `ray get-auth-token` on the head node")


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's value should be hidden when printed."""
    words = set(name.upper().replace("-", "_").split("_"))  # HF_TOKEN yes, TOKENIZERS_PARALLELISM no
    return bool(words & {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PWD", "KEY", "CREDENTIAL", "CREDENTIALS", "AUTH"})
