"""One training step, and the state it needs: forward, backward, gradient clipping, AdamW and the
weight average. Training (run.py), `charlstm bench` and the recipe's timing all step through
`train_step`, so what is timed is what trains.

    ts = TrainState.new(cfg, V)                       # weights from train.seed, zero moments/state
    x, y = next_window(ts, batches, cfg.train.seed)   # the (B, T) window at ts's position
    lr = learning_rate(ts, cfg, total_steps, time_fraction)
    loss, norm, problem = train_step(ts, cfg, x, y, lr)

A step whose loss or gradient cannot be trusted (`divergence`) changes no weights and keeps the
carried state; the position moves on all the same, and the caller decides (train.on_divergence).
runstate.py saves a TrainState and `restore` takes one up again, bit for bit.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend, model, optim

SMOOTHING = 0.05     # each step's loss weighs this much in the running train loss (bar, plot)


@dataclass
class TrainState:
    """Everything a training step reads and changes. Arrays are NumPy, or CuPy after to_device."""
    flat: Any                 # every parameter in one vector; `params` are views into it
    params: dict              # name -> array, torch.nn.LSTM's names and shapes
    gflat: Any                # the gradient, laid out as `flat`; `grads` are its views
    grads: dict
    opt: dict                 # AdamW: moments m and v, step count t, decay_mask, scratch
    rng: np.random.Generator  # dropout's masks, seeded apart from the initialization
    state: tuple              # (h, c), each (L, B, H): carried into the next window
    ema: Any = None           # optim.ema's average of `flat`, or None
    rows: slice = field(default_factory=lambda: slice(None))   # this process's batch rows (MPI)
    step: int = 0             # updates taken (skipped steps included)
    epoch: int = 0
    window: int = 0           # the next window of the epoch
    lr_scale: float = 1.0     # halved by each skipped divergent step
    smooth_loss: float | None = None
    loss_floor: float = math.inf   # the lowest smooth_loss: explode_ratio's yardstick
    draw: str = "counter"     # how dropout masks are drawn (model.DRAWS; "host" in older runs)

    @classmethod
    def new(cls, cfg, V, rows=slice(None)):
        """A fresh state for cfg's model on V characters; `rows` of the batch under MPI."""
        m, t = cfg.model, cfg.train
        flat, params = model.init_params(V, m, np.random.default_rng(t.seed))
        gflat, grads = model.alloc(model.shapes_of(params))
        local = len(range(t.batch_size)[rows])
        return cls(flat, params, gflat, grads,
                   opt=optim.adamw_init(flat, optim.decay_mask_for(params, flat)),
                   rng=np.random.default_rng([t.seed, 1]),
                   state=model.init_state(m.num_layers, local, m.hidden_size), rows=rows)

    def zero_state(self):
        h, _ = self.state
        xp = backend.array_module(h)
        return xp.zeros_like(h), xp.zeros_like(h)

    def eval_params(self):
        """The weights evaluation, checkpoints and samples use: the average with optim.ema."""
        if self.ema is None:
            return self.params
        return model.views(self.ema, model.shapes_of(self.params))

    def keep_average(self, decay):
        """Start the weight average from the weights now (optim.ema > 0), or drop it (0)."""
        if decay > 0 and self.ema is None:
            self.ema = self.flat.copy()
        elif decay == 0:
            self.ema = None

    def to_device(self, device):
        """Move every array to `device` ("cpu" leaves NumPy arrays as they are). The random
        generator stays on the host, so a run resumes on either device."""
        if backend.array_module(self.flat) is backend.require(device):
            return
        shapes = model.shapes_of(self.params)
        self.flat, self.params = model.to_device(self.flat, shapes, device)
        self.gflat, self.grads = model.to_device(self.gflat, shapes, device)
        for key in ("m", "v", "decay_mask", "scratch"):
            self.opt[key] = backend.to_device(self.opt[key], device)
        if self.ema is not None:
            self.ema = backend.to_device(self.ema, device)
        self.state = tuple(backend.to_device(s, device) for s in self.state)

    def position(self):
        """The scalars runstate.POSITION saves of a step's state."""
        return {"step": self.step, "epoch": self.epoch, "window": self.window,
                "optim_t": self.opt["t"], "rng": self.rng.bit_generator.state,
                "lr_scale": self.lr_scale, "smooth_loss": self.smooth_loss,
                "loss_floor": self.loss_floor, "draw": self.draw}

    def restore(self, saved):
        """Take up where a checkpoint (a runstate.RunState) left off; host arrays."""
        shapes = model.shapes_of(self.params)
        for name, p in self.params.items():
            p[...] = saved.weights[name]
        self.ema = None
        if saved.average is not None:
            self.ema = np.empty_like(self.flat)
            for name, view in model.views(self.ema, shapes).items():
                view[...] = saved.average[name]
        for key, moments in zip("mv", saved.moments):
            for name, view in model.views(self.opt[key], shapes).items():
                view[...] = moments[name]
        self.state = tuple(s[:, self.rows].copy() for s in saved.state)
        p = saved.position
        self.step, self.epoch, self.window = p["step"], p["epoch"], p["window"]
        self.opt["t"], self.rng.bit_generator.state = p["optim_t"], p["rng"]
        self.lr_scale, self.smooth_loss, self.loss_floor = (p["lr_scale"], p["smooth_loss"],
                                                            p["loss_floor"])
        self.draw = p.get("draw") or "host"             # a run from before the counter draw


def next_window(ts, batches, seed):
    """The (B, T) inputs and targets at ts's position; past an epoch's last window, the next
    epoch's first, from a zero carried state. An epoch's window offsets follow from (seed, epoch)
    alone, so a resumed run reads the same windows."""
    if ts.window >= batches.num_batches:
        ts.epoch, ts.window = ts.epoch + 1, 0
        ts.state = ts.zero_state()
    return batches.get(ts.window, batches.offsets(ts.epoch, seed))


def learning_rate(ts, cfg, total_steps, time_fraction=None):
    """The schedule's rate for the next update (optim.lr_at), scaled down by skipped steps."""
    return ts.lr_scale * optim.lr_at(ts.step, cfg.optim, total_steps, time_fraction)


def train_step(ts, cfg, x, y, lr, comm=None, timer=None):
    """One window: forward, backward, clip, AdamW at rate `lr`, the weight average; the position
    moves one window on. x, y: (B, T) tokens of the whole batch; this process trains ts.rows of
    them, and `comm` (distributed.Comm) averages the gradient over the processes.

    Returns (loss, norm, problem): the mean loss (nats/char), the gradient's norm before
    clipping, and None, or why the step changed nothing (see `divergence`). `timer(phase)`, if
    given, is called after "forward" and after "backward" (bench times the phases).
    """
    m = cfg.model
    rows = (ts.rows, len(x)) if comm else None       # dropout masks drawn for the whole batch
    with np.errstate(over="ignore", invalid="ignore"):   # judged below, not warned about
        loss, cache, state = model.forward(ts.params, x[ts.rows], y[ts.rows], ts.state, m.dropout,
                                           ts.rng, rows=rows, weight_drop=m.weight_drop,
                                           dropout_mask=m.dropout_mask, draw=ts.draw)
        if timer:
            timer("forward")
        model.backward(ts.params, cache, ts.grads)
        del cache                                     # one step's activations at a time
        if comm:                                      # the mean over the whole batch
            comm.average_(ts.gflat)
            loss = comm.mean(loss)
        norm = optim.grad_norm(ts.gflat)
        if timer:
            timer("backward")
    ts.step += 1
    ts.window += 1
    problem = divergence(loss, norm, len(ts.params["head.bias"]), cfg.train.explode_ratio,
                         ts.loss_floor)
    if problem:
        return loss, norm, problem
    # clipping, AdamW and the weight average in one pass over the parameters
    optim.adamw_step(ts.flat, ts.gflat, ts.opt, lr, cfg.optim,
                     grad_scale=optim.clip_factor(norm, cfg.optim.grad_clip), average=ts.ema,
                     average_decay=optim.ema_decay(cfg.optim.ema, ts.step))
    ts.state = state
    ts.smooth_loss = smooth(ts.smooth_loss, loss)
    ts.loss_floor = min(ts.loss_floor, ts.smooth_loss)
    return loss, norm, None


def smooth(average, loss):
    """The running average of the train loss after one more step (None before the first)."""
    return loss if average is None else (1 - SMOOTHING) * average + SMOOTHING * loss


def divergence(loss, norm, V, explode_ratio=None, loss_floor=math.inf):
    """Why a step's loss or gradient cannot be trusted, or None.

    Besides NaN and Inf, a finite loss that no sane model produces is divergent: weights blown
    up by a huge learning rate can give a loss of 1e31 that stays finite for the whole run.
    An untrained model starts near ln V (every character equally likely) and training only
    brings that down; a healthy run's spikes stay within a small multiple of it. A loss above
    3 ln V + 10 means the right character gets on average less than V^-3 e^-10 of the
    probability, i.e. a model confidently wrong everywhere; the 10 nats keep the bound clear
    of healthy spikes where ln V is small (a two-character text: ln 2 = 0.69).
    """
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not math.isfinite(norm):
        return f"the gradient norm is {norm}"
    bound = 3 * math.log(V) + 10
    if loss > bound:
        return (f"the loss {loss:.4g} is beyond any sane model's: above 3 ln V + 10 = "
                f"{bound:.1f} (ln V = {math.log(V):.2f}: a uniform guess over {V} characters)")
    if explode_ratio and math.isfinite(loss_floor) and loss > explode_ratio * loss_floor:
        return (f"the loss {loss:.4f} exploded past {explode_ratio} x its best running average "
                f"{loss_floor:.4f} (train.explode_ratio)")
    return None
