"""Counting the SQL queries a request runs, on every database (the node's and the cluster's)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connections
from django.test.utils import CaptureQueriesContext


class Queries:
    def __init__(self) -> None:
        self.contexts: list[CaptureQueriesContext] = []

    @property
    def count(self) -> int:
        return sum(len(context.captured_queries) for context in self.contexts)

    @property
    def statements(self) -> list[str]:
        return [query["sql"] for context in self.contexts for query in context.captured_queries]


@contextlib.contextmanager
def counting() -> Iterator[Queries]:
    """``with counting() as queries: ...`` then ``queries.count``."""
    queries = Queries()
    with contextlib.ExitStack() as stack:
        for alias in connections:
            queries.contexts.append(stack.enter_context(CaptureQueriesContext(connections[alias])))
        yield queries
