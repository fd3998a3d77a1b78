"""Speed and memory, measured: full training steps, evaluation, sampling, and the machine's own
matrix-multiply rate for comparison.

    result = run_bench()                                       # 2 x 512, batch 64, seq 100
    result = run_bench(bench_config("configs/shakespeare.yaml", ["model.cell=gru"]), steps=5)

A training step is what `charlstm train` does per batch, through the same function
(step.train_step): forward, backward, gradient clipping, AdamW and the config's weight average,
on random tokens. Its floating-point rate counts the matrix products only (2*m*n*k each):
per character the forward pass costs 2*G*H per layer for the recurrent product, 2*G*H per layer
above the first for the input product, and 2*H*V for the head, with G the gate columns (4H for
the LSTM, 3H for the GRU or coupled gates, H for the RNN); backward costs twice the forward.

With device="cuda" the same steps run on an NVIDIA GPU through CuPy (timed with the GPU's queue
drained at each mark); memory is then the GPU memory CuPy's pool holds, and the machine's rate is
a 4096^2 float32 product on that GPU (cuBLAS; TF32 only where CUPY_TF32=1 allows it).
"""

import resource
import time

import numpy as np

from . import backend, model
from .blas import set_threads
from .cells import Cell
from .config import load_config
from .data import Vocab
from .malloc import keep_freed_memory
from .sample import generate
from .step import TrainState, train_step


def matmul_flops_per_char(L, H, V, gates=4):
    """Matrix-product FLOPs of one training step, per character (forward + backward = 3x forward);
    `gates`: the H-wide gate blocks of a layer (Cell.gates)."""
    G = gates * H
    forward = 2 * G * H * L + 2 * G * H * (L - 1) + 2 * H * V
    return 3 * forward


def activation_floats(L, H, E, B, T, V):
    """torch-rnn's bound on a step's memory, summed over layers, plus the head's logits."""
    total = 0
    for k in range(L):
        D = E if k == 0 else H
        total += B * T * D + 6 * B * T * H + 8 * B * H + 8 * H * H + 8 * D * H + 9 * H
    return total + B * T * V


def machine_gflops(n=2048, seconds=1.0, xp=np):
    """float32 rate of a large square product, the BLAS library's best case on this machine."""
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    out = xp.empty_like(a)
    xp.matmul(a, a, out=out)
    backend.synchronize(xp)
    count, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < seconds:
        xp.matmul(a, a, out=out)
        count += 1
        backend.synchronize(xp)
    return 2 * n ** 3 * count / (time.perf_counter() - tic) / 1e9


def gpu_pool_mb(xp):
    """GPU memory held by CuPy's pool (it keeps what it once allocated, so this is the peak)."""
    return xp.get_default_memory_pool().total_bytes() / 2 ** 20


def current_rss_mb():
    """Resident memory now (Linux /proc), or the peak so far where /proc is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb():
    """Peak resident memory of this process image. Linux's VmHWM where there is one: getrusage's
    maxrss can carry over the parent's peak across fork and exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def _median(xs):
    return float(np.median(xs))


# bench's own shape when no config says otherwise: torch-rnn's benchmark size, and a weight decay
# so that AdamW's decay is part of the timed step
DEFAULTS = ("model.num_layers=2", "model.hidden_size=512", "train.batch_size=64",
            "train.seq_len=100", "optim.weight_decay=0.01")


def bench_config(config=None, overrides=()):
    """The Config bench times: a CONFIG file and --set overrides, or DEFAULTS without a file."""
    return load_config(config, (() if config else DEFAULTS) + tuple(overrides))


def random_tokens(cfg, V, rng):
    """A (B, T) batch of random inputs and targets."""
    shape = (cfg.train.batch_size, cfg.train.seq_len)
    return rng.integers(0, V, shape), rng.integers(0, V, shape)


def run_bench(cfg=None, vocab=65, steps=10, warmup=2, sample_chars=500, seed=0):
    """Time `steps` training steps (step.train_step) of `cfg` (bench_config() if None) on
    random tokens of a `vocab`-character alphabet, after `warmup`; a dict of figures (medians
    per step). The device and BLAS threads are cfg.train's."""
    cfg = bench_config() if cfg is None else cfg
    m, t = cfg.model, cfg.train
    spec, L, H, B, T = Cell.of_config(m), m.num_layers, m.hidden_size, t.batch_size, t.seq_len
    xp = backend.require(t.device)
    if t.threads:
        set_threads(t.threads)
    keep_freed_memory()                         # as training does (run.py)
    # first: its buffers are freed before the baseline
    peak = machine_gflops(4096, xp=xp) if xp is not np else machine_gflops()
    rng = np.random.default_rng(seed)
    ts = TrainState.new(cfg, vocab)
    ts.to_device(t.device)
    ts.keep_average(cfg.optim.ema)
    x, y = random_tokens(cfg, vocab, rng)
    # parameters, gradients and optimizer state included
    baseline = current_rss_mb() if xp is np else gpu_pool_mb(xp)

    def mark():
        backend.synchronize(xp)
        return time.perf_counter()

    fwd, bwd, upd, ev, losses = [], [], [], [], []
    for i in range(warmup + steps):
        marks = {"start": mark()}
        loss, _, _ = train_step(ts, cfg, x, y, 1e-3,
                                timer=lambda phase: marks.update({phase: mark()}))
        t3 = mark()
        model.forward(ts.params, x, y, ts.state, keep_cache=False)   # evaluation: forward only
        t4 = mark()
        if i >= warmup:
            fwd.append(marks["forward"] - marks["start"])
            bwd.append(marks["backward"] - marks["forward"])
            upd.append(t3 - marks["backward"]), ev.append(t4 - t3), losses.append(loss)
    step_peak = peak_rss_mb() if xp is np else gpu_pool_mb(xp)
    chars = B * T
    step = _median([a + b + c for a, b, c in zip(fwd, bwd, upd)])
    vocab_obj = Vocab([chr(0x21 + i) for i in range(vocab)])
    gen = generate(ts.params, vocab_obj, sample_chars + 20, np.random.default_rng(seed))
    for _ in range(20):                                         # warm up the sampler
        next(gen)
    tic = time.perf_counter()
    for _ in gen:
        pass
    sample_rate = sample_chars / (time.perf_counter() - tic)
    achieved = matmul_flops_per_char(L, H, vocab, spec.gates) * chars / step / 1e9
    return {
        "config": {"layers": L, "hidden": H, "batch": B, "seq": T, "vocab": vocab,
                   "embedding": m.embedding_size, "steps": steps, "threads": t.threads or None,
                   "device": t.device, "cell": m.cell, "peepholes": m.peepholes,
                   "coupled_gates": m.coupled_gates},
        "train_chars_per_sec": chars / step,
        "step_ms": 1e3 * step, "forward_ms": 1e3 * _median(fwd), "backward_ms": 1e3 * _median(bwd),
        "optimizer_ms": 1e3 * _median(upd),
        "eval_chars_per_sec": chars / _median(ev),
        "sample_chars_per_sec": sample_rate,
        "achieved_gflops": achieved, "machine_gflops": peak, "fraction_of_machine": achieved / peak,
        "peak_rss_mb": peak_rss_mb(),
        "gpu_memory_mb": gpu_pool_mb(xp) if xp is not np else None,
        "step_memory_mb": step_peak - baseline,
        # torch-rnn's bound is the plain LSTM's; the other cells keep other buffers
        "activation_bound_mb": 4 * activation_floats(L, H, m.embedding_size, B, T,
                                                     vocab) / 2 ** 20 if spec.plain else None,
        "parameters": int(ts.flat.size),
        "losses": losses,                    # the timed steps' losses: the same on every machine
    }


def _fig(x, places=1):
    """x to `places` decimals, or to 2 significant digits where those would show a positive
    figure as 0 (a tiny net's 0.03 GFLOP/s is not 0.0)."""
    fixed = f"{x:.{places}f}"
    return f"{x:.2g}" if x > 0 and float(fixed) == 0 else fixed


def format_report(r):
    c = r["config"]
    gpu = c.get("device") == "cuda"
    size = 4096 if gpu else 2048
    memory = (f"memory:  GPU pool {r['gpu_memory_mb']:.0f} MB; a step's activations "
              if gpu else f"memory:  peak RSS {r['peak_rss_mb']:.0f} MB; a step's activations ")
    bound = r["activation_bound_mb"]
    cell = Cell(c.get("cell", "lstm"), c.get("peepholes", False), c.get("coupled_gates", False))
    return "\n".join([
        f"{c['layers']} x {c['hidden']} {cell.describe()}, batch {c['batch']}, seq {c['seq']}, "
        f"vocab {c['vocab']}, {r['parameters']:,} parameters, median of {c['steps']} "
        f"step{'' if c['steps'] == 1 else 's'}"
        + (" on the GPU" if gpu else ""),
        f"train:   {r['train_chars_per_sec']:,.0f} chars/s  ({_fig(r['step_ms'])} ms/step: forward "
        f"{_fig(r['forward_ms'])}, backward {_fig(r['backward_ms'])}, optimizer "
        f"{_fig(r['optimizer_ms'])})",
        f"matmul:  {_fig(r['achieved_gflops'])} GFLOP/s achieved, machine "
        f"{_fig(r['machine_gflops'])} GFLOP/s on a {size}^2 product "
        f"({_fig(100 * r['fraction_of_machine'], 0)}%)",
        f"eval:    {r['eval_chars_per_sec']:,.0f} chars/s forward only "
        f"({r['eval_chars_per_sec'] / r['train_chars_per_sec']:.1f}x a training step)",
        f"sample:  {r['sample_chars_per_sec']:,.0f} chars/s at batch 1",
        memory + f"{_fig(r['step_memory_mb'], 0)} MB"
        + (f" (torch-rnn's bound: {_fig(bound, 0)} MB)" if bound is not None else ""),
    ])
