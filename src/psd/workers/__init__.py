"""psd's Celery side: the app (``psd.workers.app``), the write tasks, the NSQ bridge."""
