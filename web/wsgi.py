"""WSGI entry point for servers (granian, gunicorn): settings come from PSD_* and PSD_CONFIG."""

from psd import logs
from psd.config import load_settings
from web import create_app

settings = load_settings()
logs.setup(settings.log_format)
app = create_app(settings)
