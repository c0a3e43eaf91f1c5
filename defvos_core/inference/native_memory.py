"""Native memory that followed every frame size ever seen, bounded.

- PyTorch's CPU tensors come from the C allocator. With glibc, buffers of a new frame size
  are carved from the heap (its mmap threshold grows with the largest buffer freed), and
  the pieces freed after a size change stay with the process. `release_free_memory`
  (glibc's `malloc_trim`) returns them; the tracker calls it when the frame size changes,
  never per frame. Elsewhere (musl, macOS, Windows) it does nothing.
- oneDNN keeps the CPU kernels it compiled, one per layer and shape (77 for the student at
  one processing shape with 5 objects), in a cache of 1,024 by default: a dozen shapes'
  worth. `bound_kernel_cache` lowers that to `KERNEL_CACHE_CAPACITY`, which still holds a
  camera's working set (no cache miss once tracking, `ONEDNN_VERBOSE=profile_create`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Callable, Optional

KERNEL_CACHE_CAPACITY = 256
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return freed heap memory to the system (glibc); False where there is no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def bound_kernel_cache(capacity: int = KERNEL_CACHE_CAPACITY) -> bool:
    """Bound oneDNN's kernel cache to `capacity`, unless the environment already sets it.

    oneDNN reads the variable when it compiles its first kernel, so this acts only before
    that (`build_backend` calls it). Returns whether this call set it.
    """
    if any(name in os.environ for name in KERNEL_CACHE_VARIABLES):
        return False
    os.environ[KERNEL_CACHE_VARIABLES[0]] = str(capacity)
    return True
