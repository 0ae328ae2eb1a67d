"""Glue between Flask and :class:`psd.web.handlers.Api`: the current app's Api, and Replies as
Flask responses."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app

from psd.web.handlers import Api, Reply


def api() -> Api:
    found: Api = current_app.extensions["psd.api"]
    return found


def respond(reply: Reply) -> Response:
    return Response(reply.body, status=reply.status, content_type=reply.content_type)


def answer(route: str, *args: Any) -> Response:
    """The Api's answer to a route, through :meth:`Api.guarded` (timed, psd's errors as
    their answers), exactly as the fast path gets it."""
    handlers = api()
    return respond(handlers.guarded(getattr(handlers, route), *args))
