"""psd's HTTP API: the original's v1/v2 routes over the core store.

``create_app(settings)`` is the app factory (one blueprint per API version); ``psd.web.wsgi:app``
is the WSGI entry point that servers import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from psd.config import Settings, load_settings
from psd.connect import client_from_url
from psd.errors import StoreError
from psd.store import Store
from psd.tokens import parse_tokens
from psd.web import v1, v2, v3
from psd.web.access import RequestLog
from psd.web.auth import TokenGate
from psd.web.fastpath import FastPath
from psd.web.flask_glue import register_errors
from psd.web.handlers import Api, Enqueue
from psd.web.reply import WSGIApp


def celery_enqueue(settings: Settings) -> Enqueue:
    """Send tasks to psd's workers through the Celery app of workers/ (made at first use:
    an API that never queues never connects to the broker)."""
    made: dict[str, Any] = {}

    def enqueue(task: str, kwargs: dict[str, Any]) -> None:
        try:
            if "app" not in made:
                from psd.workers.app import create_app as create_celery_app

                made["app"] = create_celery_app(settings)
            made["app"].send_task(task, kwargs=kwargs)
        except Exception as exc:  # kombu raises several kinds; none may become a 500
            raise StoreError(f"the queue is unavailable: {exc}") from exc

    return enqueue


def exact_methods(app: WSGIApp) -> WSGIApp:
    """A method as sent: methods are case-sensitive (RFC 9110), so ``post`` is no POST, as
    it was none for the original (a 404), though Werkzeug reads a method in upper case.
    Flask answers such a request as one of a method no route takes (405, with ``Allow``)."""

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if method != method.upper():  # a copy: the access log gives the method as sent
            environ = {**environ, "REQUEST_METHOD": f"~{method}"}
        return app(environ, start_response)

    return call


def create_app(
    settings: Settings | None = None, store: Store | None = None, fast_path: bool = True
) -> Flask:
    """Build the API. Without ``store`` it connects to ``settings.redis_url``. With
    ``fast_path`` the hot routes skip Flask's request machinery (same answers, see
    psd/web/fastpath.py)."""
    settings = settings or load_settings()
    if store is None:
        if not settings.redis_url:
            raise RuntimeError("no Redis configured: set PSD_REDIS_URL (psd web starts one)")
        # the API holds a request while the store restarts (psd/connect.py)
        store = Store(client_from_url(settings.redis_url, patient=True), settings)
    api = Api(store, settings, celery_enqueue(settings))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["psd.api"] = api
    register_errors(app)
    app.register_blueprint(v1.bp)
    app.register_blueprint(v2.bp)
    app.register_blueprint(v3.bp)
    if fast_path:
        app.wsgi_app = FastPath(app.wsgi_app, api, settings.max_body_bytes)  # type: ignore[method-assign]
    app.wsgi_app = exact_methods(app.wsgi_app)  # type: ignore[method-assign]
    if settings.api_tokens:
        app.wsgi_app = TokenGate(app.wsgi_app, parse_tokens(settings.api_tokens))  # type: ignore[method-assign]
    app.wsgi_app = RequestLog(app.wsgi_app, bool(settings.access_log))  # type: ignore[method-assign]
    return app
