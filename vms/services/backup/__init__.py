"""Backups: ``vzdump`` (archives of VMs, ``vzdump`` module), retention (``prune``), restore (``restore``).

The archive format is described in ``vms.services.backup.archive``. Scheduled jobs call
``vzdump(options, *, owner, log, warn, actor=None)`` with the job's options dict.
"""

from vms.services.backup.vzdump import TIME_LIMIT, check_vzdump, vzdump

__all__ = ["TIME_LIMIT", "check_vzdump", "vzdump"]
