"""The beat tasks: retention and compaction (psd/maintenance.py does the work), on schedules
from psd's settings. ``psd beat`` (``celery -A psd.workers.app beat``) publishes them; any psd
worker runs them. Each run goes on from where the last one stopped, and a run that finds the
task already running elsewhere does nothing, so two beats, or a slow run overlapping the next,
cost nothing but a message."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task

from psd import maintenance
from psd.config import Settings

#: psd's beat tasks and the setting that spaces their runs.
BEAT_TASKS = {"psd.retention": "retention_every", "psd.compaction": "compaction_every"}


def beat_config(settings: Settings) -> dict[str, Any]:
    """Celery beat settings: a schedule entry per task, its message expiring when the next
    is due (a beat that ran while no worker did must not leave a pile of them)."""
    schedule = {}
    for name, setting in BEAT_TASKS.items():
        every = getattr(settings, setting)
        schedule[name] = {"task": name, "schedule": every, "options": {"expires": every}}
    return {
        "beat_schedule": schedule,
        "beat_schedule_filename": str(Path(settings.data_dir) / "celerybeat-schedule"),
    }


def _run(task: Task, which: maintenance.Job) -> dict[str, Any]:
    report = maintenance.run(task.app.psd.store, which, int(time.time()))
    return dataclasses.asdict(report)


def register_beat_tasks(app: Celery) -> None:
    """Add the beat tasks to ``app``."""

    @app.task(name="psd.retention", bind=True, shared=False)
    def retention(self: Task) -> dict[str, Any]:
        """Give keys the expiry the retention policy derives from their names; drop hour
        fields past the hour retention."""
        return _run(self, "retention")

    @app.task(name="psd.compaction", bind=True, shared=False)
    def compaction(self: Task) -> dict[str, Any]:
        """Drop zero fields, old activity detail and old activity records."""
        return _run(self, "compaction")
