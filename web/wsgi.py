"""WSGI entry point for servers (granian, gunicorn): settings come from PSD_* and PSD_CONFIG."""

from web import create_app

app = create_app()
