"""Bearer tokens configured for the node (``ApiToken``: a name, a role and the token's SHA-256), and reading the
``Authorization`` header that carries one. Pure: each service maps what it finds to its own permissions."""

from __future__ import annotations

import hashlib

from shared.errors import Unauthorized
from shared.settings import ApiToken


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """The configured tokens, looked up by their digest."""

    def __init__(self, tokens: list[ApiToken]) -> None:
        self._tokens = {t.sha256.lower(): t for t in tokens}

    def lookup(self, token: str) -> ApiToken | None:
        return self._tokens.get(token_digest(token))

    def bearer(self, authorization: str | None) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header (None without a header); raises
        Unauthorized for any other scheme or an empty token."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        return token

    def caller(self, authorization: str | None) -> ApiToken | None:
        """The configured token the header carries (None without a header); raises Unauthorized for an unknown one."""
        token = self.bearer(authorization)
        if token is None:
            return None
        known = self.lookup(token)
        if known is None:
            raise Unauthorized("unknown or invalid token")
        return known
