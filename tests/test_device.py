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


BIG_BUFFER = r"""
from imgcls.device import tune_allocator
tune_allocator()

def heap_bytes():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            return hi - lo
    return 0

before = heap_bytes()
buf = bytearray(80 << 20)  # a buffer larger than glibc's highest mmap threshold (32 MiB)
print(int(heap_bytes() - before >= 80 << 20))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("malloc, from_heap", [("0", 0), ("mmap", 0), ("1", 1)])
def test_buffers_above_32_mib_come_from_the_heap_when_tuned(malloc, from_heap):
    """Tuned, an 80 MiB buffer is heap memory (kept for the next step), not a fresh mmap faulted in again."""
    import os
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", BIG_BUFFER], capture_output=True, text=True, check=True,
                       env={**os.environ, "IMGCLS_MALLOC": malloc})
    assert int(p.stdout.strip()) == from_heap
