"""Where the arrays live: NumPy on the CPU, CuPy on an NVIDIA GPU, with the same kernels for both.

The kernels (lstm.py, model.py, optim.py) never name a device: each takes its array module from
the arrays it is given, as `cupy.get_array_module` does, so the CPU path is plain NumPy and the GPU
path runs the very same lines on CuPy arrays.

    xp = array_module(params["head.weight"])    # numpy or cupy
    require("cuda")                             # one clear error if CuPy or a GPU is missing
    a_gpu = to_device(a, "cuda"); a_cpu = to_host(a_gpu)

CuPy is optional (`pip install 'charlstm[gpu]'`) and imported only when a CuPy array is met or
`cuda` is asked for. Checkpoints, data and the random generator stay on the host: each dropout
mask is hashed on its device from one key the host's numpy Generator draws (model._dropout_mask),
so a run draws the same masks on either device.
"""

import numpy as np

from .errors import CharlstmError

DEVICES = ("cpu", "cuda")


def is_gpu_array(a):
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(*arrays):
    """cupy if any of the arrays is a CuPy array, else numpy."""
    for a in arrays:
        if is_gpu_array(a):
            import cupy
            return cupy
    return np


def require(device):
    """Check that `device` can be used here; returns its array module (numpy or cupy)."""
    if device == "cpu":
        return np
    if device != "cuda":
        raise CharlstmError(f"unknown device {device!r}; use one of: {', '.join(DEVICES)}")
    try:
        import cupy
    except ImportError:
        raise CharlstmError("device 'cuda' needs CuPy, which is not installed: pip install "
                            "'charlstm[gpu]' (the cupy-cuda12x or cupy-cuda13x wheel that matches "
                            "your CUDA driver)") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:              # CUDARuntimeError when there is no driver or no device
        raise CharlstmError(f"device 'cuda': CuPy is installed but finds no usable NVIDIA GPU "
                            f"({' '.join(str(e).split())}); use device 'cpu'") from None
    if count < 1:
        raise CharlstmError("device 'cuda': CuPy is installed but finds no NVIDIA GPU; use "
                            "device 'cpu'")
    return cupy


def to_device(a, device):
    """`a` (a NumPy or CuPy array) as an array of `device`: the same object if it is already there."""
    if device == "cpu":
        return to_host(a)
    xp = require(device)
    return xp.asarray(a)


def to_host(a):
    """A NumPy array with the values of `a` (copied from the GPU if it is a CuPy array)."""
    return a.get() if is_gpu_array(a) else np.asarray(a)


def synchronize(xp):
    """Wait for the GPU's queued work (for timings); nothing to wait for on the CPU."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def flush_subnormal(x):
    """Set the entries of x (in place) smaller in size than its type's smallest normal number to 0.

    x86 CPUs handle subnormal floats in microcode, many times slower than normal ones: Adam's
    moments of a row that gets no gradient decay into them (optim.FLUSH_EVERY). Changing them by
    less than 1.2e-38 each changes nothing else.
    """
    xp = array_module(x)
    xp.multiply(x, xp.abs(x) >= np.finfo(x.dtype).tiny, out=x)
