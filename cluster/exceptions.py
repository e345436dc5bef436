"""Domain errors of the cluster app that belong to no sub-package; mapped to HTTP where they are caught."""

from __future__ import annotations


class InvalidOptions(ValueError):
    """Datacenter options that cannot be written (nothing was changed)."""
