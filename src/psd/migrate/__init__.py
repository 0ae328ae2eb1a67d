"""The migration from the 2016 service's keyspace, for ``psd migrate``.

``oldkeys`` reads the old layout, ``run`` rewrites it into psd's store, ``progress`` keeps
where a run is so a rerun goes on from there, and ``verify`` compares a sample of sums.
"""

from psd.migrate.run import Migration, MigrationSummary, loss_report

__all__ = ["Migration", "MigrationSummary", "loss_report"]
