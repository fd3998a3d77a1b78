"""Plain helpers shared by the test modules: `from helpers import ...` (pytest puts tests/ on
sys.path; conftest.py has pytest rewrite the asserts here, as in a test module).

Fixtures live in conftest.py; this file holds no tests and no fixtures.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import charlstm
from charlstm import model
from charlstm.config import load_config


# --- corpora, configs and command output --------------------------------------------------------

def synthetic_text(n=20_000, seed=0):
    """A text with learnable structure: words from a small lexicon in a fixed rotation, with noise.

    Its unigram entropy is about 3 nats/char, but the next character is nearly determined by
    the previous few, so a model that learns anything beats the unigram baseline by far.
    """
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    out, i, size = [], 0, 0
    while size < n:
        word = words[i % len(words)] if rng.random() > 0.05 else words[rng.integers(12)]
        out += [word, "\n" if rng.random() < 0.1 else " "]
        size += len(word) + 1
        i += 1
    return "".join(out)[:n]


def tiny_config(data_path, **overrides):
    """configs/tiny.yaml on `data_path`, with section.key=value overrides."""
    sets = [f"data.path={data_path}"] + [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return load_config("configs/tiny.yaml", sets)


def no_internal_error(output):
    """What a command printed holds no traceback and no "internal error": the CLI prints that for
    an exception that is not a user error, i.e. a bug, so one such line is a failure too."""
    assert "Traceback" not in output, output
    assert "internal error" not in output, output


def quiet(*_):
    """An `echo` for Run.train that prints nothing."""


def invoke(*args):
    """The `charlstm` command line, in this process, with every argument made a string."""
    from click.testing import CliRunner

    from charlstm.cli import cli            # here, so that importing helpers needs no CLI
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *words):
    """A user error: non-zero exit, one line on stderr naming what is wrong, no traceback."""
    assert result.exit_code != 0, result.output
    no_internal_error(result.output)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for w in words:
        assert w in lines[0], (w, lines[0])


# --- data-parallel runs: `charlstm train` under mpirun, or as one process -----------------------

HAVE_MPI = bool(shutil.which("mpirun")) and importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI and not os.environ.get("CHARLSTM_REQUIRE_MPI"),
                               reason="needs Open MPI (mpirun) and mpi4py: pip install "
                                      "'charlstm[mpi]'")
MPI_SETTINGS = ["train.max_steps=20", "train.eval_every=10", "train.log_every=1",
                "train.threads=1", "train.batch_size=8", "train.seq_len=16", "model.dropout=0.1",
                "model.weight_drop=0.2", "train.sample_length=0"]


def mpi_env():
    return dict(os.environ, PYTHONPATH=str(Path(charlstm.__file__).parents[1]),
                OMPI_MCA_btl_vader_single_copy_mechanism="none",   # containers lack CMA
                OMPI_MCA_rmaps_base_oversubscribe="1")


def charlstm_cmd(ranks, *args):
    """`python -m charlstm ARGS`, under `mpirun -n RANKS` unless ranks is None."""
    base = [sys.executable, "-m", "charlstm", *map(str, args)]
    if ranks is None:
        return base
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", str(ranks), *base]


def train_ranks(ranks, out, corpus, *extra, sets=MPI_SETTINGS, check=True):
    """`charlstm train` into `out` on `ranks` MPI ranks (None: one plain process); a resume when
    `out` already holds a checkpoint."""
    args = (["train", "configs/tiny.yaml", "--data", corpus, "--out", out] if not
            (out / "last.npz").exists() else ["train", "--resume", out])
    args += [x for s in sets for x in ("--set", s)] + list(extra) + ["--no-progress"]
    return subprocess.run(charlstm_cmd(ranks, *args), capture_output=True, text=True,
                          env=mpi_env(), timeout=300, check=check)


def step_losses(run_dir):
    """{step: train_loss} from a run's metrics.jsonl."""
    return {m["step"]: m["train_loss"] for m in map(json.loads,
            (run_dir / "metrics.jsonl").read_text().splitlines()) if "train_loss" in m}


def assert_losses_close(a, b):
    """Two step_losses: the same steps, each loss within 1e-5 (relative)."""
    assert sorted(a) == sorted(b)
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(b[step]), (step, a[step], b[step])


# --- a served model: `charlstm serve` on a loopback port --------------------------------------

def tiny_run(folder, steps=60, seed=0):
    """A small trained run folder (configs/tiny.yaml on synthetic_text), for serving."""
    folder = Path(folder)
    if not (folder / "best.npz").exists():
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder.parent / f"{folder.name}-corpus.txt"
        corpus.write_text(synthetic_text(seed=seed), encoding="utf-8")
        charlstm.train("configs/tiny.yaml", data=str(corpus), out=folder,
                       overrides={"train.max_steps": steps, "train.eval_every": steps // 2,
                                  "train.sample_length": 0})
    return folder


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, wait=60):
    """`charlstm serve ARGS` in a child process on 127.0.0.1 and a free port, once it answers
    /healthz: (process, base URL)."""
    import urllib.request
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "charlstm", "serve", *map(str, args), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the server did not start: {proc.stdout.read()}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def served(tmp_path, run=True, args=(), wait=60):
    """`charlstm serve` of a tiny run folder (run=True) or its best.npz (start_server); yields
    the base URL. Stopped with SIGTERM at the end, which it must survive with exit status 0."""
    folder = tiny_run(tmp_path / "served")
    proc, url = start_server([folder if run else folder / "best.npz", *args], wait)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the server did not stop within 30 s of SIGTERM") from None
        assert proc.returncode == 0, out


# --- models and their oracles -------------------------------------------------------------------

# (cell, peepholes, coupled_gates): every cell and LSTM variant, and their test ids
CELLS = [("lstm", False, False), ("lstm", True, False), ("lstm", False, True),
         ("lstm", True, True), ("gru", False, False), ("rnn", False, False)]
IDS = ["lstm", "peepholes", "coupled", "peepholes+coupled", "gru", "rnn"]


def make_params(cell="lstm", peepholes=False, coupled=False, V=7, E=5, H=6, L=2, seed=0,
                dtype=np.float64):
    """Every parameter random, biases and peephole vectors included, so a wrong bias path cannot
    hide."""
    cfg = SimpleNamespace(embedding_size=E, hidden_size=H, num_layers=L, forget_bias=1.0,
                          cell=cell, peepholes=peepholes, coupled_gates=coupled)
    rng = np.random.default_rng(seed)
    flat, params = model.init_params(V, cfg, rng, dtype)
    flat[...] = rng.uniform(-0.8, 0.8, flat.shape)
    return flat, params


def random_batch(V, B, T, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def random_state(L, B, H, seed=2):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (L, B, H)), rng.uniform(-0.5, 0.5, (L, B, H))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def rel_error(a, b):
    return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12)


def numeric_grad(f, arg, eps=1e-6):
    """Central differences of the scalar f() in every element of `arg`, which is perturbed in
    place and restored (a NumPy or CuPy array; the result is a NumPy array)."""
    numeric = np.zeros(arg.shape)
    for idx in np.ndindex(arg.shape):
        old = float(arg[idx])
        arg[idx] = old + eps
        up = f()
        arg[idx] = old - eps
        down = f()
        arg[idx] = old
        numeric[idx] = (up - down) / (2 * eps)
    return numeric


def naive_forward(params, x, y, state):
    """The equations of each cell, one gate and one step at a time (no fusing), for any cell and
    LSTM variant: which one, and every size, read here from the parameter names and shapes, not
    from the library. Returns (mean loss, (h, c)); c passes through a GRU or RNN unchanged."""
    p = next(name for name in ("lstm", "gru", "rnn") if f"{name}.weight_hh_l0" in params)
    G, H = params[f"{p}.weight_hh_l0"].shape
    coupled = p == "lstm" and G == 3 * H                  # f, g, o: the input gate is 1 - f
    order = {"lstm": "fgo" if coupled else "ifgo", "gru": "rzn", "rnn": "h"}[p]
    V = params["head.weight"].shape[0]
    E = params["embedding.weight"].shape[1] if "embedding.weight" in params else 0
    L = sum(1 for name in params if name.startswith(f"{p}.weight_hh_l"))
    B, T = x.shape
    h, c = [s.copy() for s in state]
    total = 0.0
    for t in range(T):
        inp = params["embedding.weight"][x[:, t]] if E > 0 else np.eye(V)[x[:, t]]
        for k in range(L):
            def part(gate, side, arg):   # W_{side}{gate} arg + b_{side}{gate}, one gate's rows
                rows = slice(order.index(gate) * H, (order.index(gate) + 1) * H)
                w, b = params[f"{p}.weight_{side}_l{k}"], params[f"{p}.bias_{side}_l{k}"]
                return arg @ w[rows].T + b[rows]

            def peep(name):              # a peephole vector; zero where there is none
                return params.get(f"{p}.weight_{name}_l{k}", np.zeros(H))

            if p == "rnn":
                h[k] = np.tanh(part("h", "ih", inp) + part("h", "hh", h[k]))
            elif p == "gru":
                r = sigmoid(part("r", "ih", inp) + part("r", "hh", h[k]))
                z = sigmoid(part("z", "ih", inp) + part("z", "hh", h[k]))
                n = np.tanh(part("n", "ih", inp) + r * part("n", "hh", h[k]))
                h[k] = (1 - z) * n + z * h[k]
            else:
                pre = {g: part(g, "ih", inp) + part(g, "hh", h[k]) for g in order}
                f = sigmoid(pre["f"] + peep("cf") * c[k])
                g = np.tanh(pre["g"])
                if coupled:
                    c_new = f * c[k] + (1 - f) * g
                else:
                    i = sigmoid(pre["i"] + peep("ci") * c[k])
                    c_new = f * c[k] + i * g
                o = sigmoid(pre["o"] + peep("co") * c_new)
                c[k] = c_new
                h[k] = o * np.tanh(c_new)
            inp = h[k]
        logits = inp @ params["head.weight"].T + params["head.bias"]
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total -= logp[np.arange(B), y[:, t]].sum()
    return total / (B * T), (np.array(h), np.array(c))


def assert_forward_equals_naive(params, x, y, state):
    """model.forward against naive_forward: the loss and the final h and c, to 1e-12. Returns
    forward's final (h, c)."""
    loss, _, (h, c) = model.forward(params, x, y, state)
    loss_ref, (h_ref, c_ref) = naive_forward(params, x, y, state)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c, c_ref, rtol=1e-12, atol=1e-12)
    return h, c
