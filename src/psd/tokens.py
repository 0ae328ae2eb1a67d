"""API tokens as the settings name them (``PSD_API_TOKENS``): ``SCOPE:TOKEN`` entries, read
here, without the web layer, so that settings with a bad one are refused as they load, by
every command (psd/config.py), as any other bad setting is; psd/web/auth.py guards the API
with them."""

from __future__ import annotations

from collections.abc import Iterable

from psd.errors import InvalidInput

SCOPES = frozenset({"read", "write"})
#: Shortest token accepted: a guessable token is no protection.
MIN_TOKEN = 16

Token = tuple[bytes, frozenset[str]]


def parse_tokens(specs: Iterable[str]) -> list[Token]:
    """``SCOPE:TOKEN`` entries (scope ``read``, ``write`` or ``read+write``)."""
    tokens = []
    for spec in specs:
        scope_text, sep, token = spec.partition(":")
        scopes = frozenset(scope_text.split("+"))
        if not sep or not scopes <= SCOPES:
            raise InvalidInput(
                "each entry is SCOPE:TOKEN, scope read, write or read+write", "api_tokens"
            )
        if not token.isascii() or not token.isprintable():
            raise InvalidInput("a token is printable ASCII", "api_tokens")
        if token != token.strip():  # the gate reads "Bearer <token>" trimmed: never sent
            raise InvalidInput("a token has no space at either end", "api_tokens")
        if len(token) < MIN_TOKEN:
            raise InvalidInput(f"a token has at least {MIN_TOKEN} characters", "api_tokens")
        tokens.append((token.encode(), scopes))
    return tokens
