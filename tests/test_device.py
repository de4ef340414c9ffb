"""The CPU allocator setting (device.tune_allocator): on where glibc is, off when asked."""

from __future__ import annotations

import platform

import pytest

from imgcls.device import tune_allocator


def test_tune_allocator_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("IMGCLS_MALLOC", "0")
    assert tune_allocator() is False
    monkeypatch.delenv("IMGCLS_MALLOC")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's: nothing to apply on this system")
    assert tune_allocator() is True  # every mallopt call accepted its value
