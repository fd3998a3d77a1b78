"""The automatic recipe: the best model for a text and a time budget on this machine.

    cfg, explicit = load_config_keys(None, ["data.path=notes.txt", "train.max_minutes=10",
                                            "train.recipe=auto"])
    choice = choose(cfg, explicit, corpus)       # times a few training steps here, then decides
    print(choice.report())                       # the table `charlstm train --minutes` prints
    Run.start(choice.cfg, "runs/notes")

What a user set (in a config file or with --set) is kept; everything else is chosen around it:

1. Speed. Training steps of 1- and 2-layer nets are timed at two widths each on this machine, and
   the time of every other width is read off the line through them (a step costs a fixed overhead
   plus a part proportional to its matrix products). This takes a few seconds, in a child
   process (the training process never holds the timed nets), and comes off the budget.
2. Size. Each candidate net gets budget / step time steps, and so reads steps x batch x window
   characters. For each layer count the chosen net is the one with the most parameters that
   reads CHARS_PER_PARAM characters per parameter, so that size and updates grow together with
   the budget (as in the compute-optimal scaling of language models, here about 10 characters a
   parameter). In 10 minutes 1 x 448 (about 10 per parameter) beat 1 x 512 (6) by 0.029 on
   pydocs-10m; on pycode-50m's held-out code 2 x 256 (12) beat 2 x 192 (33) by 0.006 and 2 x 384
   (3.0) by 0.034; at 2 minutes the winners read 10-21. One layer: on a text read about once,
   one wide layer beat two or ended within 0.01 of them in every trial (at 2 minutes two-layer
   nets lost to one layer of as many parameters by 0.04-0.15 on every corpus; at 10 minutes
   1 x 448 beat every two-layer net on pydocs-10m by 0.09 or more and ended 0.006 behind 2 x 256 on
   pycode-50m's held-out code).
   A short text is another matter: if that net would read it more than REPEATS times, the text
   limits and not the time. Then for each layer count the chosen net is the biggest that still
   gets MIN_UPDATES updates, reads MIN_PER_PARAM characters per parameter, and has at most
   TEXT_PARAMS parameters per character of the text (the time buys epochs, not size), and two
   layers once they get TWO_LAYER_UPDATES (with the heavy regularization of many epochs, two
   layers beat one: 2 x 128 to 2 x 384 with 3,500-14,000 updates all beat 1 x 384 by 0.02 on
   fortunes-100k in 10 minutes; with fewer updates one wins: on russian-2m in 10 minutes, about
   5 epochs, 1 x 512 beat every two-layer net by 0.076 or more). On tiny-shakespeare in 10
   minutes, 1 x 640 (3,750 updates, 6 epochs) got 1.4387, 2 x 448 (2,800 updates, 1.75
   characters per parameter) 1.4695 and 2 x 256 (the 10-per-parameter net: 6,300 updates, 10
   epochs) 1.5272; in 30 minutes 2 x 448 (2.6 parameters per character, 10,600 updates) beat
   2 x 512 (3.3) by 0.025, and on fortunes-100k in 10 minutes 2 x 128 (2.8) ended within 0.004
   of 2 x 384 (11).
3. Regularization. The characters read divided by the training text's length are the epochs. A
   text read up to 3 times is not memorized: no dropout (dropout 0.1 cost 0.011 at one epoch);
   more epochs get dropout 0.1 and then 0.2 (tiny-shakespeare's 10-minute config, about 6 epochs),
   and past OVERFIT_EPOCHS the 30-minute config's full set (window dropout, weight drop, weight
   decay), which beat dropout alone at 18 epochs (tiny-shakespeare, 30 minutes: 1.3975 against
   1.4104) and at 54 (fortunes-100k, 2 x 128, 2 minutes: 2.020 against 2.049).
4. The rest: configs/shakespeare.yaml's optimizer (AdamW, lr 3.5e-3, beta2 0.99, cosine schedule
   over the budget) used by every configuration of the study; a weight average over the last
   tenth of the steps, the last eighth under the full set, whose weights move more from step to
   step (tiny-shakespeare, 30 minutes, about 8,000 steps: ema 0.9987 ended 0.007 and 0.009 behind
   the config's 0.999 in two sittings; 0.999 chosen with `--set` ended 0.001 behind it); evaluations
   that cost under a tenth of the budget.

The figures in the rules come from the study in benchmarks/study.py (benchmarks/RESULTS.md).
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from . import backend, model, optim
from .bench import matmul_flops_per_char, random_net
from .cells import Cell
from .errors import CharlstmError

DEFAULT_MINUTES = 3          # `charlstm train` with no config and no run length
# hidden sizes, 1 or 2 layers: close steps, so that timing noise that moves the choice across
# a threshold below moves it to a neighbour of about the same size
WIDTHS = (128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 512, 576, 640, 768, 896, 1024)
GPU_WIDTHS = WIDTHS + (1280, 1536, 2048)                 # a GPU's steps cost little more when wide
CHARS_PER_PARAM = 10.0       # the chosen net has the most parameters that read this many each
TWO_LAYER_UPDATES = 4500     # a text read many times: two layers when they get this many updates
REPEATS = 4                  # a text read more often than this limits the model, not the time:
MIN_UPDATES = 2800           # ...then the most parameters that get this many updates,
MIN_PER_PARAM = 2.0          # ...read this many characters each
TEXT_PARAMS = 2.8            # ...and have at most this many per character of the training text
MIN_STEPS = 300              # fewer updates than this train nothing worth keeping
OVERFIT_EPOCHS = 10          # beyond this many epochs, regularize as the 30-minute config does
AVERAGE = 1 / 10             # the weight average spans this share of the steps,
AVERAGE_HEAVY = 1 / 8        # ...this share under the 30-minute config's regularization
VAL_CHARS = 250_000          # the validation split's most characters: seconds to evaluate
EVAL_SHARE = 0.1             # evaluations may take this share of the budget
EVAL_SPEEDUP = 2.5           # a forward-only character costs about 1 / 2.5 of a training one

# configs/shakespeare.yaml's optimizer and batch, tuned on tiny-shakespeare and used unchanged
# by every configuration of the study.
FIXED = {"model.embedding_size": 64, "optim.lr": 0.0035, "optim.beta2": 0.99,
         "optim.schedule": "cosine", "optim.warmup_steps": 50, "optim.min_lr": 0.0001,
         "optim.grad_clip": 5.0, "train.batch_size": 32, "train.seq_len": 50,
         "train.windows": "fixed", "train.max_steps": None, "train.max_epochs": None,
         "train.eval_every": 10 ** 9}


@dataclass
class Choice:
    cfg: object                                    # the resolved Config (train.recipe off)
    rows: list = field(default_factory=list)       # (key, value, reason)
    timing: str = ""                               # what was measured, in one line
    seconds: float = 0.0                           # the time the measurement took

    def report(self):
        """The table `charlstm train --minutes` prints: the choices with a reason each, then
        the settings taken as they are from configs/shakespeare.yaml in one line."""
        shown = [(k, v, why) for k, v, why in self.rows if why]
        width = max(len(k) for k, _, _ in shown)
        lines = [self.timing] + [f"  {k:<{width}}  {_show(v):<8} {why}" for k, v, why in shown]
        rest = ", ".join(f"{k.split('.')[1]} {_show(v)}" for k, v, why in self.rows if not why
                         and k in FIXED)
        return "\n".join(lines + textwrap.wrap(f"as configs/shakespeare.yaml: {rest}", 96,
                                               initial_indent="  ", subsequent_indent="    "))


def _show(v):
    return "null" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def check_minutes(minutes):
    """--minutes must be a positive finite number of minutes."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise CharlstmError(f"--minutes must be a positive number of minutes, got {minutes!r}; "
                            "e.g. --minutes 10")


def params_of(V, E, H, L, cell):
    return sum(int(np.prod(s)) for s in model.param_shapes(V, E, H, L, cell.name, cell.peepholes,
                                                           cell.coupled_gates).values())


def time_step(V, E, H, L, B, T, cell, dropout, device="cpu", steps=3, warmup=3):
    """Seconds per training step (forward, backward, clip, AdamW) of this net on `device`, on
    random tokens: the median of `steps` after `warmup` steps (the first steps of a wide net are
    slower than the rest, while the allocator settles on reusing its large buffers)."""
    xp = backend.require(device)
    rng = np.random.default_rng(0)
    flat, params, gflat, grads, opt, x, y, state = random_net(V, E, H, L, B, T, cell, device,
                                                              rng)
    ocfg = SimpleNamespace(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    times = []
    for i in range(warmup + steps):
        backend.synchronize(xp)
        tic = time.perf_counter()
        _, cache, _ = model.forward(params, x, y, state, dropout, rng)
        model.backward(params, cache, grads)
        del cache
        optim.clip_grad_norm(gflat, 5.0)
        optim.adamw_step(flat, gflat, opt, 1e-3, ocfg)
        backend.synchronize(xp)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return float(np.median(times))


def time_apart(nets, V, E, B, T, cell, device):
    """{(layers, width): seconds per training step} for each net in `nets`, timed (time_step)
    in a child Python process: the process that trains afterwards has never held the timed nets,
    so its allocator and its speed are those of a plain run of the chosen config."""
    job = json.dumps({"nets": nets, "V": V, "E": E, "B": B, "T": T, "device": device,
                      "cell": [cell.name, cell.peepholes, cell.coupled_gates]})
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # this charlstm's parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    child = subprocess.run([sys.executable, "-m", "charlstm.recipe"], input=job, env=env,
                           capture_output=True, text=True)
    if child.returncode != 0:
        said = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise CharlstmError(f"timing training steps (in a child process) failed: {said}")
    return {(L, H): seconds for L, H, seconds in json.loads(child.stdout)}


def _time_job():
    """The child of time_apart: a job in JSON on stdin, [[layers, width, seconds], ...] out."""
    job = json.load(sys.stdin)
    cell = Cell(*job["cell"])
    try:
        out = [[L, H, time_step(job["V"], job["E"], H, L, job["B"], job["T"], cell, 0.0,
                                job["device"])] for L, H in job["nets"]]
    except CharlstmError as e:
        sys.exit(str(e))
    print(json.dumps(out))


class _Settings:
    """The config being resolved: what the user set stays; `put` records each choice."""

    def __init__(self, cfg, explicit):
        self.cfg, self.explicit, self.rows = cfg, set(explicit), []

    def get(self, key):
        section, name = key.split(".")
        return getattr(getattr(self.cfg, section), name)

    def put(self, key, value, why):
        if key in self.explicit:
            self.rows.append((key, self.get(key), "yours"))
            return
        section, name = key.split(".")
        setattr(getattr(self.cfg, section), name, value)
        self.rows.append((key, value, why))


def choose(cfg, explicit, corpus, timer=None):
    """Resolve `cfg` (train.recipe auto, train.max_minutes the budget) for `corpus` on this
    machine; returns a Choice whose cfg is a plain config with train.recipe off.

    `explicit`: the dotted keys the user set, which keep their values. `timer(V, E, H, L, B, T,
    cell, dropout, device)`, if given, returns seconds per step in this process (tests pass a
    model machine); by default a child process times the nets (time_apart).
    """
    minutes = cfg.train.max_minutes
    if minutes is None:
        raise CharlstmError("train.recipe: auto needs a time budget: give --minutes N or set "
                            "train.max_minutes")
    s = _Settings(cfg, explicit)
    n_total, V = len(corpus.tokens), len(corpus.vocab)

    # The validation split: a tenth of the text, at most VAL_CHARS, so an evaluation is quick.
    val = min(0.1, max(VAL_CHARS / max(n_total, 1), 0.001))
    s.put("data.val_fraction", round(val, 6),
          f"{int(n_total * val):,} of {n_total:,} characters held out for validation")
    d = cfg.data
    n_train = int(n_total * (1 - d.val_fraction - d.test_fraction))
    for key, value in FIXED.items():
        s.put(key, value, "")
    B, T = cfg.train.batch_size, cfg.train.seq_len
    if n_train < B * T + 1:                        # a short text: fewer rows, same window
        if n_train < T + 2 or "train.batch_size" in s.explicit:
            raise CharlstmError(
                f"{corpus.description} has {n_train:,} characters to train on, too few for even "
                f"one batch of {T}-character windows (train.seq_len); use a longer text (a few "
                "thousand characters at least)")
        s.put("train.batch_size", (n_train - 1) // T, "")
        B = cfg.train.batch_size

    # 1. speed: for each layer count, two widths timed and the others on the line through them
    cell, E, device = Cell.of_config(cfg.model), cfg.model.embedding_size, cfg.train.device
    depths = [cfg.model.num_layers] if "model.num_layers" in s.explicit else [1, 2]
    widths = ([cfg.model.hidden_size] if "model.hidden_size" in s.explicit else
              list(GPU_WIDTHS if device == "cuda" else WIDTHS))
    timed = sorted({min(widths), min(max(widths), 512 if device == "cpu" else 1024)})
    tic = time.perf_counter()
    sizes = [(L, H) for L in depths for H in timed]
    measured = ({(L, H): timer(V, E, H, L, B, T, cell, 0.0, device) for L, H in sizes}
                if timer else time_apart(sizes, V, E, B, T, cell, device))
    spent = time.perf_counter() - tic
    step_time = {}
    for L in depths:
        flops = {H: matmul_flops_per_char(L, H, V, cell.gates) for H in widths + timed}
        (h0, t0), (h1, t1) = [(H, measured[L, H]) for H in (timed[0], timed[-1])]
        slope = (t1 - t0) / (flops[h1] - flops[h0]) if h1 != h0 else 0.0
        for H in widths:
            step_time[L, H] = max(t0 + max(slope, 0.0) * (flops[H] - flops[h0]), 1e-6)
    budget = max(60 * minutes - spent, 1.0)
    timing = (f"timed training steps here for {spent:.1f} s: "
              + ", ".join(f"{L} x {H} {B * T / t:,.0f} chars/s" for (L, H), t in measured.items()))

    # 2. size: per layer count, the most parameters that read CHARS_PER_PARAM characters each,
    # one layer; a short text: the most it can feed, two layers with TWO_LAYER_UPDATES updates
    def plan(net):
        steps = budget / step_time[net]
        chars = steps * B * T
        params = params_of(V, E, net[1], net[0], cell)
        return steps, chars, chars / n_train, chars / params, params

    nets = list(step_time)
    able = [net for net in nets if plan(net)[0] >= MIN_STEPS]
    if not able:
        L, H = max(nets, key=lambda net: plan(net)[0])
        raise CharlstmError(
            f"a budget of {minutes:g} minutes gives even a {L} x {H} net only "
            f"{plan((L, H))[0]:.0f} training steps here (at least {MIN_STEPS} are needed); give "
            f"more minutes, e.g. --minutes {math.ceil(minutes * MIN_STEPS / max(plan((L, H))[0], 1))}")

    def pick(fits, why, two_from=None):
        """The biggest net of each layer count in `fits`; one layer, or two if theirs gets
        `two_from` updates. None if no net fits."""
        best = {layers: max((net for net in fits if net[0] == layers), key=lambda net: plan(net)[4])
                for layers in depths if any(net[0] == layers for net in fits)}
        if not best:
            return None
        if len(best) == 1:
            return best[min(best)], why.rstrip("; ")
        if two_from is None:
            return best[1], why + ("one layer: on a text read about once it beat two or ended "
                                   "within 0.01 of them in every trial of the study")
        two = plan(best[2])[0]
        L = 2 if two >= two_from else 1
        why += (f"two layers: {two:,.0f} updates (they beat one from about {two_from:,})"
                if L == 2 else f"one layer: two would get {two:,.0f} updates (they beat one "
                f"from about {two_from:,})")
        return best[L], why

    # per layer count the most parameters that read CHARS_PER_PARAM characters each; a short
    # budget that gives none enough: the fastest net
    (L, H), layers_why = (pick([net for net in able if plan(net)[3] >= CHARS_PER_PARAM], "")
                          or (max(able, key=lambda net: plan(net)[0]), ""))
    # a short text that net would read more than REPEATS times limits more than the time does:
    # then per layer count the most parameters with MIN_UPDATES updates, MIN_PER_PARAM characters
    # read each and at most TEXT_PARAMS per character of the text (none: the smallest such net)
    repeats = plan((L, H))[2]
    if repeats > REPEATS:
        busy = [net for net in able if plan(net)[0] >= MIN_UPDATES
                and plan(net)[3] >= MIN_PER_PARAM] or [(L, H)]
        why = f"the text limits, not the time: {L} x {H} would read it {repeats:.0f} times"
        (L, H), layers_why = (
            pick([net for net in busy if plan(net)[4] <= TEXT_PARAMS * n_train],
                 f"{why}, so at most {TEXT_PARAMS:g} parameters per character of it; ",
                 TWO_LAYER_UPDATES)
            or (min(busy, key=lambda net: plan(net)[4]),
                f"{why}, and even the smallest net has over {TEXT_PARAMS:g} parameters per "
                "character of it"))
    steps, chars, epochs, per_param, params = plan((L, H))
    s.put("model.num_layers", L, layers_why)
    s.put("model.hidden_size", H,
          f"{L} x {H}, {params / 1e6:.2f}M parameters: {steps:,.0f} steps read "
          f"{chars / 1e6:.1f}M characters, {per_param:.1f} per parameter ({epochs:.1f} epochs of "
          f"{n_train:,})")
    H, L = cfg.model.hidden_size, cfg.model.num_layers

    # 3. regularization from the epochs
    if epochs <= 3:
        drop, why = 0.0, f"{epochs:.1f} epochs: too few to memorize the text"
    elif epochs <= 5:
        drop, why = 0.1, f"{epochs:.1f} epochs: light dropout"
    else:
        drop, why = 0.2, f"{epochs:.1f} epochs: dropout against memorizing the text"
    heavy = epochs > OVERFIT_EPOCHS
    if heavy:
        drop, why = 0.25, f"{epochs:.0f} epochs > {OVERFIT_EPOCHS}: one mask per window"
    s.put("model.dropout", drop, why)
    s.put("model.dropout_mask", "window" if heavy else "step", "")
    s.put("model.weight_drop", 0.25 if heavy else 0.0,
          f"{epochs:.0f} epochs: DropConnect on the recurrent weights" if heavy else "")
    s.put("optim.weight_decay", 0.1 if heavy else 0.0, "with weight drop" if heavy else "")

    # 4. a weight average over the last tenth of the run (eighth: heavily regularized weights
    # are noisier); evaluations under a tenth of the budget
    share = AVERAGE_HEAVY if heavy else AVERAGE
    ema = min(max(1 - 1 / (share * steps), 0.99), 0.999)
    s.put("optim.ema", round(ema, 4), f"averages about the last {1 / (1 - ema):,.0f} steps")
    val_chars = n_total * cfg.data.val_fraction
    eval_seconds = val_chars / (EVAL_SPEEDUP * B * T / step_time[L, H])
    evals = int(min(10, max(1, EVAL_SHARE * budget / max(eval_seconds, 1e-9))))
    s.put("train.eval_minutes", round(budget / 60 / evals, 3),
          f"{evals} evaluations of about {eval_seconds:.0f} s each")
    cfg.train.max_minutes = round(budget / 60, 3)  # the timing comes off the budget
    s.rows.append(("train.max_minutes", cfg.train.max_minutes,
                   f"{minutes:g} minutes less the {spent:.1f} s of timing"))
    cfg.train.recipe = "off"                       # resolved: a plain config from here on
    return Choice(cfg, s.rows, timing, spent)


if __name__ == "__main__":
    _time_job()
