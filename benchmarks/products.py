"""The recurrent products of an LSTM step, timed alone: NumPy's BLAS against PyTorch's (MKL) on
the same shapes, in turn, in one process (developers only; torch is never a charlstm dependency).

Each time step of a layer's forward computes W_hh (4H x H) times the state (H x B), and each
step back computes W_hh^T (H x 4H) times the gate gradient (4H x B): 2 T products per layer and
window, in sequence, that no batching over time can join. At the small batches the recipe trains,
they are most of a step; this says how fast each library runs them.

    python benchmarks/products.py                        # the recipe's shapes, B 32
    python benchmarks/products.py --shapes 128x50,512x64 --threads 2

Prints a table: hidden x batch, microseconds a product for NumPy (as charlstm computes it) and
for torch.mm (the faster of the two ways round), forward and backward, and the ratio of the sums.
"""

import argparse
import time

import numpy as np

from charlstm import lstm
from charlstm.blas import set_threads


def median_us(f, seconds=1.0):
    f()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        tic = time.perf_counter()
        f()
        times.append(time.perf_counter() - tic)
    return 1e6 * float(np.median(times))


def numpy_products(H, B, rng):
    """charlstm's forward and backward recurrent products at this width (lstm.TRANSPOSED_FROM)."""
    w = rng.standard_normal((4 * H, H)).astype(np.float32)
    h, da = (rng.standard_normal(s).astype(np.float32) for s in ((B, H), (B, 4 * H)))
    if H >= lstm.TRANSPOSED_FROM:
        out_f, out_b = np.empty((4 * H, B), np.float32), np.empty((H, B), np.float32)
        return (lambda: np.matmul(w, h.T, out=out_f)), (lambda: np.matmul(w.T, da.T, out=out_b))
    w_t = np.ascontiguousarray(w.T)
    out_f, out_b = np.empty((B, 4 * H), np.float32), np.empty((B, H), np.float32)
    return (lambda: np.matmul(h, w_t, out=out_f)), (lambda: np.matmul(da, w, out=out_b))


def torch_products(torch, H, B):
    """torch.mm on the same shapes, each direction both ways round (the faster one counts)."""
    w, h, da = torch.randn(4 * H, H), torch.randn(B, H), torch.randn(B, 4 * H)
    h_t, da_t = h.t().contiguous(), da.t().contiguous()
    return ((lambda: torch.mm(h, w.t())), (lambda: torch.mm(w, h_t))), \
        ((lambda: torch.mm(da, w)), (lambda: torch.mm(w.t(), da_t)))


def shapes(text):
    """An argparse type: HIDDENxBATCH, comma-separated, as [(H, B), ...]."""
    out = []
    for shape in text.split(","):
        try:
            H, B = (int(v) for v in shape.split("x"))
        except ValueError:
            H = B = 0
        if H < 1 or B < 1:
            raise argparse.ArgumentTypeError(f"{shape!r} is not HIDDENxBATCH (e.g. 256x32)")
        out.append((H, B))
    return out


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--shapes", default="256x32,352x32,448x32,640x32,128x50,512x64", type=shapes,
                    help="HIDDENxBATCH, comma-separated")
    ap.add_argument("--threads", type=int, default=2,
                    help="NumPy's and torch's threads (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="NumPy then torch, this many times")
    a = ap.parse_args()
    for name in ("threads", "rounds"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} {getattr(a, name)}: give 1 or more")
    set_threads(a.threads)
    try:
        import torch
        torch.set_num_threads(a.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print("| hidden x batch | NumPy forward us | backward us | torch.mm forward us | backward us "
          "| NumPy / torch time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for H, B in a.shapes:
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append([median_us(f) for f in numpy_products(H, B, rng)])
            if torch:
                theirs.append([min(median_us(f) for f in ways)
                               for ways in torch_products(torch, H, B)])
        o = np.median(ours, axis=0)
        if torch:
            t = np.median(theirs, axis=0)
            print(f"| {H} x {B} | {o[0]:.0f} | {o[1]:.0f} | {t[0]:.0f} | {t[1]:.0f} | "
                  f"{o.sum() / t.sum():.2f} |")
        else:
            print(f"| {H} x {B} | {o[0]:.0f} | {o[1]:.0f} | - | - | - |")


if __name__ == "__main__":
    main()
