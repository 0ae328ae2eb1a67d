"""WSGI entry point for servers (granian, gunicorn): settings come from PSD_* and PSD_CONFIG."""

import gc

from psd import logs
from psd.config import load_settings
from psd.lifetime import die_with_pool_parent
from psd.web import create_app

# a granian worker dies with granian's main process, which does not see to it itself
die_with_pool_parent()

settings = load_settings()
logs.setup(settings.log_format)
app = create_app(settings)
# What importing and building the app made lives as long as the worker: kept out of the
# collector's full passes, each of which otherwise walked all of it: a pause in one request
# of every few leaderboards (bench/v3_bench.py --http, docs/benchmarks.md)
gc.freeze()
