"""Set the number of threads of the BLAS library that NumPy uses, after NumPy is imported.

Environment variables such as OPENBLAS_NUM_THREADS only work before the library loads, so a config
setting (train.threads) needs the library's own call. This finds the OpenBLAS that NumPy loaded
and calls its set-threads function through ctypes (what threadpoolctl does, without the dependency).
"""

import ctypes

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def _loaded_blas_paths():
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths = {line.split()[-1] for line in lines if "blas" in line.lower() and "/" in line}
    return sorted(paths)


def set_threads(n):
    """Use n BLAS threads (n >= 1). Returns True if a BLAS library took the setting."""
    done = False
    for path in _loaded_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done = True
                break
    return done
