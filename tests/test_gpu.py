"""The GPU path (CuPy) against the CPU path: the same kernels, so the same numbers.

Skipped without CuPy and an NVIDIA GPU (CI has none); run on a GPU machine with
    python -m pytest -q tests/test_gpu.py
"""

import json
import shutil
import sys

import numpy as np
import pytest

from charlstm import backend, checkpoint, fused, lstm, model, optim
from charlstm.data import Vocab
from charlstm.errors import CharlstmError
from charlstm.evaluate import evaluate
from charlstm.sample import generate
from charlstm.run import Run

from helpers import (CELLS, HAVE_MPI, IDS, MPI_SETTINGS, assert_losses_close, make_params,
                     numeric_grad, quiet, random_batch, random_state, rel_error, step_losses,
                     tiny_config, train_ranks)


def _gpu():
    try:
        return backend.require("cuda")
    except CharlstmError as e:                 # no CuPy, or no GPU: anything else is a failure
        pytest.skip(f"no GPU: {e}")


@pytest.fixture(scope="module")
def cp():
    return _gpu()


def to_gpu(params, cp):
    return {k: cp.asarray(v) for k, v in params.items()}


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [m["train_loss"] for m in map(json.loads, lines) if "train_loss" in m]


# --- the fused kernels against the NumPy lines they replace -------------------------------------

def test_fused_cell_forward_equals_numpy_lines(cp):
    rng = np.random.default_rng(0)
    B, H = 5, 7
    a, rec = rng.uniform(-2, 2, (B, 4 * H)), rng.uniform(-2, 2, (B, 4 * H))
    c_prev = rng.uniform(-1, 1, (B, H))
    c_ref, h_ref, scratch = np.empty((B, H)), np.empty((B, H)), np.empty((B, H))
    gates_ref = a.copy()
    lstm.cell_forward(gates_ref, rec, c_prev, c_ref, h_ref, scratch)
    ga, c_out, h_out = cp.asarray(a), cp.empty((B, H)), cp.empty((B, H))
    fused.cell_forward(ga, cp.asarray(rec), cp.asarray(c_prev), c_out, h_out)
    for ours, ref in [(ga, gates_ref), (c_out, c_ref), (h_out, h_ref)]:
        np.testing.assert_allclose(ours.get(), ref, rtol=1e-12, atol=1e-14)


def test_fused_layer_backward_equals_numpy_lines(cp):
    rng = np.random.default_rng(1)
    T, B, H = 6, 3, 5
    xproj = rng.uniform(-1, 1, (T, B, 4 * H))
    w_hh = rng.uniform(-1, 1, (4 * H, H))
    h0, c0 = rng.uniform(-1, 1, (B, H)), rng.uniform(-1, 1, (B, H))
    dhs, dh_T, dc_T = (rng.standard_normal(s) for s in [(T, B, H), (B, H), (B, H)])
    _, _, cache = lstm.lstm_forward(xproj.copy(), w_hh, h0, c0)
    ref = lstm.lstm_backward(dhs, cache, dh_T, dc_T)
    g = [cp.asarray(v) for v in (xproj, w_hh, h0, c0, dhs, dh_T, dc_T)]
    _, _, gcache = lstm.lstm_forward(g[0], g[1], g[2], g[3])
    ours = lstm.lstm_backward(g[4], gcache, g[5], g[6])
    for o, r in zip(ours, ref):
        assert rel_error(o.get(), r) < 1e-12


def test_fused_adamw_equals_numpy_lines(cp):
    rng = np.random.default_rng(2)
    flat, grad = rng.standard_normal(1000), rng.standard_normal(1000)
    mask = (rng.random(1000) > 0.3).astype(np.float64)
    cfg = type("C", (), dict(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1))
    cpu, gpu = optim.adamw_init(flat.copy(), mask), optim.adamw_init(cp.asarray(flat), mask)
    gpu = {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in gpu.items()}
    p_cpu, p_gpu = flat.copy(), cp.asarray(flat)
    for step in range(5):
        optim.adamw_step(p_cpu, grad * (step + 1), cpu, 1e-2, cfg)
        optim.adamw_step(p_gpu, cp.asarray(grad * (step + 1)), gpu, 1e-2, cfg)
    np.testing.assert_allclose(p_gpu.get(), p_cpu, rtol=1e-12)
    np.testing.assert_allclose(gpu["v"].get(), cpu["v"], rtol=1e-12)


# --- the model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("E,L", [(5, 2), (0, 1), (4, 3)])
def test_forward_and_gradients_equal_cpu_in_float64(cp, E, L):
    _, params = make_params(E=E, L=L, H=6)
    assert_forward_and_backward_equal_cpu(cp, params, random_state(L, 4, 6))


def assert_forward_and_backward_equal_cpu(cp, params, state):
    """Loss, final state, every gradient and the initial state's, float64, to 1e-10."""
    x, y = random_batch(7, 4, 9)
    loss, cache, (h, c) = model.forward(params, x, y, state)
    grads, (dh0, dc0) = model.backward(params, cache)
    gp = to_gpu(params, cp)
    gstate = tuple(cp.asarray(s) for s in state)
    gloss, gcache, (gh, gc) = model.forward(gp, x, y, gstate)
    ggrads, (gdh0, gdc0) = model.backward(gp, gcache)
    assert gloss == pytest.approx(loss, rel=1e-10)
    for ours, ref in [(gh, h), (gc, c), (gdh0, dh0), (gdc0, dc0)]:
        assert rel_error(ours.get(), ref) < 1e-10
    for name in params:
        assert rel_error(ggrads[name].get(), grads[name]) < 1e-10, name
    return gp


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_every_cell_forward_gradients_and_step_equal_cpu_in_float64(cp, spec):
    """The new cells run the generic xp lines on the GPU (no fused kernels): the same numbers."""
    _, params = make_params(*spec, E=5, L=2, H=6)
    state = random_state(2, 4, 6)
    gp = assert_forward_and_backward_equal_cpu(cp, params, state)
    x, _ = random_batch(7, 4, 9)
    hh, cc = (s.copy() for s in state)
    gh, gc = (cp.asarray(s) for s in state)
    prep, gprep = model.prepare_step(params), model.prepare_step(gp)
    for t in range(3):
        ref = model.step(prep, x[:, t], hh, cc)
        assert rel_error(model.step(gprep, x[:, t], gh, gc).get(), ref) < 1e-10


def test_gradients_match_finite_differences_on_the_gpu(cp):
    _, params = make_params(E=4, L=2, H=4)
    gp = to_gpu(params, cp)
    x, y = random_batch(7, 2, 5)
    h0, c0 = (cp.asarray(s) for s in random_state(2, 2, 4))
    _, cache, _ = model.forward(gp, x, y, (h0, c0))
    grads, (dh0, dc0) = model.backward(gp, cache)
    def loss_at():
        return model.forward(gp, x, y, (h0, c0), keep_cache=False)[0]

    for name, p in list(gp.items()) + [("h0", h0), ("c0", c0)]:
        analytic = {"h0": dh0, "c0": dc0}.get(name, grads.get(name)).get()
        assert rel_error(analytic, numeric_grad(loss_at, p)) < 1e-6, name


@pytest.mark.parametrize("draw", model.DRAWS)
def test_dropout_masks_equal_cpu(cp, draw):
    """The GPU draws the masks the CPU draws from the same generator state."""
    dt = np.dtype(np.float32)
    for shape in [(3, 5, 7), (1664, 416)]:
        a = model._dropout_mask(shape, 0.25, np.random.default_rng(8), dt, np, draw)
        b = model._dropout_mask(shape, 0.25, np.random.default_rng(8), dt, cp, draw)
        assert isinstance(b, cp.ndarray) and (b.get() == a).all()


def test_sampler_and_evaluation_equal_cpu(cp):
    _, params = make_params(E=5, L=2, H=6, dtype=np.float64)
    gp = to_gpu(params, cp)
    prep, gprep = model.prepare_step(params), model.prepare_step(gp)
    h, c = random_state(2, 3, 6)
    gh, gc = cp.asarray(h), cp.asarray(c)
    for tok in ([1, 2, 3], [4, 0, 6], [5, 5, 5]):
        ref = model.step(prep, np.array(tok), h, c)
        ours = model.step(gprep, np.array(tok), gh, gc)
        assert rel_error(ours.get(), ref) < 1e-10
    vocab = Vocab("abcdefg")
    a = "".join(generate(params, vocab, 50, np.random.default_rng(0), prime="abc", argmax=True))
    b = "".join(generate(gp, vocab, 50, np.random.default_rng(0), prime="abc", argmax=True))
    assert a == b
    start = random_state(2, 3, 6)                   # a checkpoint's carried state, on the host
    a = "".join(generate(params, vocab, 50, np.random.default_rng(0), argmax=True, start=start))
    b = "".join(generate(gp, vocab, 50, np.random.default_rng(0), argmax=True, start=start))
    assert a == b
    tokens = np.random.default_rng(3).integers(0, 7, 5000)
    for st in (None, start):
        assert evaluate(gp, tokens, min_stream=1000, start=st)[0] == pytest.approx(
            evaluate(params, tokens, min_stream=1000, start=st)[0], rel=1e-10)


# --- training ----------------------------------------------------------------------------------

SETS = dict(model__dropout=0.2, model__dropout_mask="window", model__weight_drop=0.2,
            optim__ema=0.9, optim__weight_decay=0.1, train__max_steps=20, train__eval_every=10,
            train__log_every=1, train__batch_size=8, train__seq_len=20)


def test_twenty_float32_steps_equal_cpu(tmp_path, corpus, cp):
    """Dropout masks, weight drop, AdamW with decay and the weight average, on both devices."""
    Run.start(tiny_config(corpus, **SETS), tmp_path / "cpu").train(progress=False, echo=quiet)
    Run.start(tiny_config(corpus, **SETS, train__device="cuda"), tmp_path / "gpu").train(
        progress=False, echo=quiet)
    cpu, gpu = losses(tmp_path / "cpu"), losses(tmp_path / "gpu")
    assert len(cpu) == len(gpu) == 20
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)


def test_resume_on_the_gpu_is_exact(tmp_path, corpus, cp):
    sets = dict(SETS, train__device="cuda", train__max_steps=30)
    whole = Run.start(tiny_config(corpus, **sets), tmp_path / "whole")
    whole.train(progress=False, echo=quiet)
    Run.start(tiny_config(corpus, **dict(sets, train__max_steps=20)), tmp_path / "part").train(
        progress=False, echo=quiet)
    resumed = Run.resume(tmp_path / "part", tiny_config(corpus, **sets))
    resumed.train(progress=False, echo=quiet)
    assert losses(tmp_path / "whole") == losses(tmp_path / "part")
    np.testing.assert_array_equal(whole.ts.flat.get(), resumed.ts.flat.get())


def test_gpu_checkpoint_samples_evaluates_and_resumes_on_the_cpu(tmp_path, corpus, cp):
    from click.testing import CliRunner

    from charlstm.cli import cli
    sets = dict(SETS, train__device="cuda")
    Run.start(tiny_config(corpus, **sets), tmp_path / "run").train(progress=False, echo=quiet)
    arrays, meta = checkpoint.load_checkpoint(tmp_path / "run" / "last.npz")
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    runner = CliRunner()
    cpu = runner.invoke(cli, ["sample", str(tmp_path / "run" / "best.npz"), "--seed", "1",
                              "--length", "80", "--prime", "the"])
    gpu = runner.invoke(cli, ["sample", str(tmp_path / "run" / "best.npz"), "--seed", "1",
                              "--length", "80", "--prime", "the", "--device", "cuda"])
    assert cpu.exit_code == gpu.exit_code == 0, (cpu.output, gpu.output)
    assert len(cpu.output) > 80 and cpu.output.startswith("the")
    ev = [runner.invoke(cli, ["eval", str(tmp_path / "run" / "best.npz"), "--text", str(corpus),
                              "--json", *dev]) for dev in ([], ["--device", "cuda"])]
    assert [r.exit_code for r in ev] == [0, 0], [r.output for r in ev]
    a, b = (json.loads(r.output)["loss"] for r in ev)
    assert b == pytest.approx(a, rel=1e-4)
    # the GPU run continues on the CPU, within float32 round-off of continuing on the GPU
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    on_cpu = Run.resume(tmp_path / "run", tiny_config(corpus, **dict(SETS, train__max_steps=25)))
    on_cpu.train(progress=False, echo=quiet)
    on_gpu = Run.resume(tmp_path / "copy", tiny_config(corpus, **dict(sets, train__max_steps=25)))
    on_gpu.train(progress=False, echo=quiet)
    assert isinstance(on_cpu.ts.flat, np.ndarray) and on_cpu.step == on_gpu.step == 25
    np.testing.assert_allclose(losses(tmp_path / "run"), losses(tmp_path / "copy"), rtol=1e-4)


def test_two_mpi_ranks_on_the_gpu_equal_one_process(tmp_path, corpus, cp):
    if not HAVE_MPI:
        pytest.skip("needs Open MPI (mpirun) and mpi4py")
    sets = MPI_SETTINGS + ["train.device=cuda", "model.dropout_mask=window"]
    train_ranks(2, tmp_path / "two", corpus, sets=sets)
    train_ranks(None, tmp_path / "one", corpus, sets=sets)
    assert_losses_close(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"))


# --- without a GPU (these run everywhere) ------------------------------------------------------

def test_cuda_without_cupy_is_one_clear_line(tmp_path, corpus, monkeypatch):
    from click.testing import CliRunner

    from charlstm.cli import cli
    monkeypatch.setitem(sys.modules, "cupy", None)           # import cupy now fails
    runner = CliRunner()
    Run.start(tiny_config(corpus, train__max_steps=2), tmp_path / "run").train(
        progress=False, echo=quiet)
    ckpt = str(tmp_path / "run" / "last.npz")
    for args in (["bench", "--device", "cuda"],
                 ["sample", ckpt, "--device", "cuda"],
                 ["eval", ckpt, "--text", str(corpus), "--device", "cuda"],
                 ["train", "--data", str(corpus), "--out", str(tmp_path / "new"),
                  "--set", "train.device=cuda", "--set", "train.max_steps=2", "--no-progress"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "device 'cuda' needs CuPy" in result.output and "internal error" not in \
            result.output, (args, result.output)
    assert not (tmp_path / "new" / "last.npz").exists()


def test_unknown_device_names_the_key(corpus):
    from charlstm.errors import ConfigError
    with pytest.raises(ConfigError, match="train.device.*cpu, cuda"):
        tiny_config(corpus, train__device="tpu")
