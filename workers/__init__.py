"""psd's Celery side: the app (``workers.app``), the write tasks, the NSQ bridge."""
