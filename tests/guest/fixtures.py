"""Fixtures of the test guest, loaded as a plugin by ``tests/conftest.py``.

``guest_image``: the kernel and initramfs, built once per machine (cached by package versions)
and checked once per session. ``start_guest`` (from ``tests.guest.qemu``) boots it.
"""

from __future__ import annotations

import pytest

from tests.guest.image import GuestImage, build_guest_image


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The test guest's ``-kernel`` and ``-initrd`` (and its kernel release)."""
    return build_guest_image()
