"""Pool membership: which ACL paths (``/vms/100``, ``/storage/local``) belong to which pool.

The objects a pool holds belong to apps above authz, which authz must not import; each of those
apps registers a provider of its members when it is ready (``vms``: its VMs and storages), and
the resolver asks every provider when it rebuilds its snapshot. A membership change is a
replicated write like any other, so it moves the version the snapshot is checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

Provider = Callable[[], Iterable[tuple[str, str]]]  # () -> (ACL path, poolid) of each member

_providers: dict[str, Provider] = {}
_generation = 0


def register(name: str, provider: Provider) -> None:
    """Add (or, under the same ``name``, replace) a provider of pool members."""
    global _generation
    _providers[name] = provider
    _generation += 1


def generation() -> int:
    """Moves at every registration: a snapshot built before a provider came is not reused after."""
    return _generation


def memberships() -> Iterator[tuple[str, str]]:
    """``(path, poolid)`` of every object in a pool, from every registered provider."""
    for provider in list(_providers.values()):
        yield from provider()
