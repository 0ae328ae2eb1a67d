"""Optional API tokens with read and write scopes.

With ``PSD_API_TOKENS`` empty the API is open, as the original's was. Otherwise every route but
``/health/ping`` needs ``Authorization: Bearer <token>``: the write routes a token with the
``write`` scope, every other route one with ``read``. A token is compared with every configured
one in constant time (``hmac.compare_digest``), so the answer's timing says nothing about how
much of a guess was right. The gate is WSGI middleware in front of everything else, so the
fast path and Flask are guarded alike.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

from psd.tokens import Token
from psd.web.errors import shape_of
from psd.web.reply import Reply, WSGIApp

OPEN = frozenset({"/health/ping"})
WRITES = frozenset({"/v1/write", "/v1/count", "/v3/write"})


def routed_path(path: str) -> str:
    """The path as the router reads it: a run of slashes is one (Werkzeug's router drops
    the leading ones and merges the others), so that ``//v3/write`` needs the write scope
    as ``/v3/write`` does."""
    return re.sub("/{2,}", "/", path) if "//" in path else path


class TokenGate:
    """WSGI middleware: ``TokenGate(app, parse_tokens(settings.api_tokens))``."""

    def __init__(self, app: WSGIApp, tokens: list[Token]) -> None:
        self.app = app
        self.tokens = tokens

    def scopes_of(self, presented: bytes) -> frozenset[str] | None:
        """The scopes of the presented token (those of every entry that names it); every
        configured token is compared."""
        found = None
        for token, scopes in self.tokens:
            if hmac.compare_digest(token, presented):
                found = scopes if found is None else found | scopes
        return found

    def refusal(self, environ: dict[str, Any]) -> Reply | None:
        path = routed_path(environ.get("PATH_INFO", ""))
        if path in OPEN:
            return None
        scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        scopes = None
        if scheme.lower() == "bearer":
            scopes = self.scopes_of(presented.strip().encode("utf-8", "replace"))
        shape = shape_of(path)
        if scopes is None:
            message = "an API token is needed: Authorization: Bearer <token>"
            return shape.answer(401, "unauthorized", message)
        need = "write" if path in WRITES else "read"
        if need not in scopes:
            return shape.answer(403, "forbidden", f"this token may not {need}")
        return None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        reply = self.refusal(environ)
        if reply is None:
            return self.app(environ, start_response)
        status = "401 Unauthorized" if reply.status == 401 else "403 Forbidden"
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))]
        if reply.status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="psd"'))
        start_response(status, headers)
        return [reply.body]
