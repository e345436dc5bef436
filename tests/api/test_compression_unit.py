"""Which ``Accept-Encoding`` headers get a gzip answer (RFC 9110 §12.5.3 q-values)."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from portal.api.compression import accepts_gzip


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip, deflate", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, *", False),
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("", False),
        ("br, gzip;q=bogus", False),
    ],
)
def test_accepts_gzip(header, expected):
    request = RequestFactory().get("/", HTTP_ACCEPT_ENCODING=header)
    assert accepts_gzip(request) is expected
