"""Keep the memory a training step frees for the next step: two settings of glibc's malloc.

A step allocates and frees the same large arrays every time (activations, dropout masks, their
gradients: megabytes each). By default glibc gives such memory back to the system when it is
freed, so the next step maps fresh pages and the kernel zeroes each one: configs/shakespeare.yaml's
step took 9% longer, 1 x 512 with dropout 0.1 at the recipe's batch 12% (benchmarks/RESULTS.md,
"Freed memory kept for the next step"). Raising the two thresholds keeps those pages.
"""

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # mallopt's parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 * 2 ** 20   # glibc's largest on 64 bits: bigger arrays are still mapped apart
TRIM_THRESHOLD = 256 * 2 ** 20  # free memory kept at the heap's top before any goes back


def keep_freed_memory():
    """Apply both settings to this process's malloc. Returns whether it took them (glibc does;
    elsewhere nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
