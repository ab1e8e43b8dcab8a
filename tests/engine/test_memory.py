"""freed_memory_retained: inside it glibc serves large blocks from its heap and keeps them once
freed; after it, glibc's defaults are back."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# In a fresh interpreter (the setting is process-wide): bytes glibc holds in mmap-ed blocks
# while a 64 MB tensor is alive: before, inside and after freed_memory_retained().
PROBE = """
import ctypes, torch
from alignloop.engine.memory import freed_memory_retained

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped_while_alive():
    block = torch.empty(64 << 20, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd
    del block
    return mapped

before = mapped_while_alive()
with freed_memory_retained() as applied:
    inside = mapped_while_alive()
print(before >> 20, inside >> 20, mapped_while_alive() >> 20, applied)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_large_blocks_come_from_the_heap_while_retained():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    before_mb, inside_mb, after_mb, applied = int(out[0]), int(out[1]), int(out[2]), out[3]
    assert applied == "True"
    assert before_mb >= 64  # glibc's default: a 64 MB block is mmap-ed, and unmapped when freed
    assert inside_mb < 64  # retained: served from the heap, which keeps it for the next step
    assert after_mb >= 64  # the defaults are back
