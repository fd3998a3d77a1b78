"""The automatic recipe (`charlstm train --minutes N`): the best model for a text and a time
budget on this machine. The README's "Train on your own text" says in a user's words what it
chooses and why; the figures behind each rule sit beside its constant below, and come from the
study in benchmarks/study.py (benchmarks/RESULTS.md).

    cfg, explicit = load_config_keys(None, ["data.path=notes.txt", "train.max_minutes=10",
                                            "train.recipe=auto"])
    choice = choose(cfg, explicit, corpus)       # times a few training steps, then decides
    print(choice.report())                       # the table `charlstm train --minutes` prints
    Run.start(choice.cfg, "runs/notes")

What a user set (in a config file or with --set) is kept; everything else is chosen around it, in
four steps: speed (`_speeds`), size (`_size`), regularization (`_regularize`) and the rest
(`_average_and_evaluations`).
"""

import bz2
import copy
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import backend, model
from .bench import matmul_flops_per_char, random_tokens
from .cells import Cell
from .config import Config, config_from_dict, config_to_dict, get, replaced
from .corpus import prepare
from .distributed import world
from .errors import OUT_OF_MEMORY, CharlstmError
from .malloc import keep_freed_memory
from .run import OVERFIT_EPOCHS
from .step import TrainState, train_step

DEFAULT_MINUTES = 3          # `charlstm train` with no config and no run length
MOST_MINUTES = 1_000_000     # a budget past this is a typo (the law is fitted to 2-30 minutes)
# Hidden sizes of 1 or 2 layers: close steps, so that timing noise that moves the choice across
# a threshold below moves it to a neighbour of about the same size.
WIDTHS = (128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 512, 576, 640, 768, 896, 1024)
GPU_WIDTHS = WIDTHS + (1280, 1536, 2048)                 # a GPU's steps cost little more when wide
# The loss law, fitted by benchmarks/fit.py to the study's runs on five corpora (55 points:
# fortunes-100k, russian-2m, pydocs-10m, pycode-50m, tiny-shakespeare; benchmarks/RESULTS.md, "The
# recipe's loss law"):
#     validation loss = E + s (A k / N^alpha + B m / D^beta)
# N the LSTM's weights and biases (not the embedding or the head), D the characters read; k, m
# and beta of two layers fitted apart from one layer's (1, 1, beta). E and s belong to a corpus,
# so the net that minimizes the bracket does not depend on them. Residual rms 0.025 (largest
# 0.058); alpha chosen by leaving each corpus out of the fit in turn (rms 0.005-0.057 on it). On
# the 8 pairs of corpus and budget, the grid's net the law ranks first was the best in 6, 0.008
# and 0.024 behind in the other two.
LAW = {"A": 0.7237, "k2": 1.07, "B": 51.44, "beta": 0.4327, "m2": 1.979, "beta2": 0.4751,
       "alpha": 0.15}
# Where the law was fitted; outside it extrapolates, and the report says so.
FITTED = {"text": (89_600, 49_846_154), "symbols": (65, 199), "minutes": (2, 30),
          "read": (1.1e6, 24.9e6), "params": (136_704, 3_284_992), "epochs": (0, 305)}
# At most this many LSTM parameters per training character: the fitted runs' most (fortunes-100k,
# 2 x 384 with the heavy set, that pair's best), so a short text with a long budget gets no net
# far beyond what the study saw.
MAX_PER_CHAR = 20.9
# The fit corpora's bz2 bits per character (of their first BPC_CHARS), E and s. A new text's
# predicted loss uses the E and s of the corpus nearest in bits per character: a rough floor (see
# RESULTS for how rough, on the held-out corpora); the differences between nets scale with s.
LIKE = {"fortunes-100k": (3.136, 1.840, 1.000), "pycode-50m": (1.457, 0.807, 4.552),
        "pydocs-10m": (1.824, 0.012, 9.534), "russian-2m": (2.560, 0.590, 5.757),
        "tinyshakespeare": (2.351, 1.178, 1.842)}
BPC_CHARS = 1_000_000
MIN_STEPS = 300              # fewer updates than this train nothing worth keeping
DROPOUT_MINUTES = 10
# Regularization by epochs: up to 3 none (dropout 0.1 cost 0.011 at one epoch; at 2 minutes it
# ended behind on 3 held-out texts of 3, by 0.026-0.105, and at 5 on 2 of 2), except in budgets of
# DROPOUT_MINUTES or more: dropout 0.1 (at 10 minutes below 3 epochs it was ahead or level on all 5
# held-out texts, by 0.000-0.037; judged on the last two, RESULTS "A third held-out set"); then
# dropout 0.1 and 0.2; past OVERFIT_EPOCHS the 30-minute config's full set (window dropout, weight
# drop, weight decay), which beat dropout alone at 18 epochs (tiny-shakespeare, 30 minutes: 1.3975
# against 1.4104) and at 54 (fortunes-100k, 2 x 128, 2 minutes: 2.020 against 2.049).
# The weight average spans this share of the steps, a larger one under the full set, whose weights
# move more from step to step (tiny-shakespeare, 30 minutes: ema 0.9987 ended 0.007 and 0.009
# behind 0.999 in two runs).
AVERAGE = 1 / 10
AVERAGE_HEAVY = 1 / 8
VAL_CHARS = 250_000          # the validation split's most characters: seconds to evaluate
EVAL_SHARE = 0.1             # evaluations may take this share of the budget
EVAL_SPEEDUP = 2.5           # a forward-only character costs about 1 / 2.5 of a training one
TIMING_OPTIM = {"optim.beta2": 0.99, "optim.weight_decay": 0.0}   # as FIXED's, no decay

# configs/shakespeare.yaml's optimizer and batch, tuned on tiny-shakespeare and used unchanged
# by every configuration of the study. (eval_every is off: the recipe sets train.eval_minutes.)
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
    notes: list = field(default_factory=list)      # the law's predictions; where it extrapolates
    plans: dict = field(default_factory=dict)      # {(layers, width): Plan} of every net weighed

    def report(self):
        """The table `charlstm train --minutes` prints: the choices with a reason each, then
        the settings taken as they are from configs/shakespeare.yaml in one line."""
        shown = [(k, v, why) for k, v, why in self.rows if why]
        width = max(len(k) for k, _, _ in shown)
        lines = [self.timing] + [f"  {k:<{width}}  {_text(v):<8} {why}" for k, v, why in shown]
        rest = ", ".join(f"{k.split('.')[1]} {_text(v)}" for k, v, why in self.rows if not why
                         and k in FIXED)
        lines += [wrapped for note in self.notes
                  for wrapped in textwrap.wrap(note, 96, subsequent_indent="    ")]
        return "\n".join(lines + textwrap.wrap(f"as configs/shakespeare.yaml: {rest}", 96,
                                               initial_indent="  ", subsequent_indent="    "))


def _text(v):
    return "null" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def resolve(cfg, explicit, progress=False, echo=print, notice=None):
    """The recipe's choice for cfg (see choose) as a new Config, made by rank 0 under mpirun and
    sent to every rank; rank 0 echoes `notice` (why the recipe runs, if given) and the report."""
    comm = world()
    chosen, failure = None, None
    if comm is None or comm.rank == 0:
        try:
            choice = choose(cfg, explicit, prepare(cfg.data, progress, echo))
            if notice:
                echo(notice)
            echo(choice.report())
            chosen = config_to_dict(choice.cfg)
        except Exception as e:          # agreed on: every rank raises it, none waits for rank 0
            if comm is None:
                raise
            failure = e
    if comm is not None:                # (a rank that failed before this agrees here too)
        chosen = comm.agree(failure, chosen)
    return config_from_dict(chosen, "the recipe's choice")


def check_minutes(minutes):
    """--minutes must be a positive finite number of minutes, at most MOST_MINUTES."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise CharlstmError(f"--minutes must be a positive number of minutes, got {minutes!r}; "
                            "e.g. --minutes 10")
    if minutes > MOST_MINUTES:                 # its steps and schedule would overflow
        raise CharlstmError(f"--minutes {minutes:g} (train.max_minutes) is more than charlstm "
                            f"plans for: at most {MOST_MINUTES:,} minutes (about 2 years)")


def params_of(V, E, H, L, cell, core=False):
    """The net's parameters; with `core`, the recurrent layers' alone (no embedding, no head:
    the loss law's N)."""
    return model.param_count(V, E, H, L, cell.name, cell.peepholes, cell.coupled_gates, core)


def timing_config(V, E, H, L, B, T, cell, dropout, device="cpu"):
    """The Config whose training step time_step times: the net, the batch, FIXED's optimizer."""
    values = {"model.embedding_size": E, "model.hidden_size": H, "model.num_layers": L,
              "model.cell": cell.name, "model.peepholes": cell.peepholes,
              "model.coupled_gates": cell.coupled_gates, "model.dropout": dropout,
              "model.vocab_size": V, "train.batch_size": B, "train.seq_len": T,
              "train.device": device, **TIMING_OPTIM}
    return replaced(Config(), values)


def time_step(V, E, H, L, B, T, cell, dropout, device="cpu", seconds=0.4, steps=5, warmup=3,
              windows=None):
    """Seconds per training step (step.train_step) of this net on `device`, on `windows` ((B,
    T + 1) tokens of the text: random tokens over a large vocabulary made the embedding's
    backward slower than the text's, and 1 x 128 with 744 symbols timed 25% slow) or random ones:
    the median of at least `steps` steps and `seconds` of them, after at least `warmup` steps and
    `seconds` of warming up (the first steps of a net are slower than the rest while the
    allocator and the memory settle: timing 3 of them after 3 read 1 x 128 with 4,108 symbols
    24% slow)."""
    cfg = timing_config(V, E, H, L, B, T, cell, dropout, device)
    ts = TrainState.new(cfg, V)
    ts.to_device(device)
    if windows is None:
        x, y = random_tokens(cfg, V, np.random.default_rng(0))
    else:
        x, y = windows[:, :-1], windows[:, 1:]
    return time_state(ts, cfg, x, y, seconds, steps, warmup)


def time_state(ts, cfg, x, y, seconds=0.4, steps=5, warmup=3):
    """Seconds per training step of `ts` (a step.TrainState on cfg's device) on the window (x,
    y): the median of at least `steps` steps and `seconds`, after `warmup` steps and `seconds`."""
    xp = backend.require(cfg.train.device)
    times, warm = [], []
    while len(times) < steps or sum(times) < seconds:
        backend.synchronize(xp)
        tic = time.perf_counter()
        train_step(ts, cfg, x, y, 1e-3)
        backend.synchronize(xp)
        dt = time.perf_counter() - tic
        if len(warm) < warmup or sum(warm) < seconds:
            warm.append(dt)
        else:
            times.append(dt)
    return float(np.median(times))


USER_ERROR = 3                      # the timing child's exit status for a CharlstmError


def time_apart(nets, V, E, B, T, cell, device, windows=None):
    """{(layers, width): seconds per training step} for each net in `nets`, timed (time_step)
    in a child Python process: the process that trains afterwards has never held the timed nets,
    so its allocator and its speed are those of a plain run of the chosen config."""
    job = json.dumps({"nets": nets, "V": V, "E": E, "B": B, "T": T, "device": device,
                      "cell": [cell.name, cell.peepholes, cell.coupled_gates],
                      "windows": None if windows is None else windows.tolist()})
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # this charlstm's parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    child = subprocess.run([sys.executable, "-m", "charlstm.recipe"], input=job, env=env,
                           capture_output=True, text=True)
    if child.returncode != 0:
        said = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise CharlstmError(said if child.returncode == USER_ERROR    # the user's to fix, as it is
                            else f"timing training steps (in a child process) failed: {said}")
    return {(L, H): seconds for L, H, seconds in json.loads(child.stdout)}


def _time_job():
    """The child of time_apart: a job in JSON on stdin, [[layers, width, seconds], ...] out."""
    job = json.load(sys.stdin)
    keep_freed_memory()                         # as the training process will (run.py)
    cell = Cell(*job["cell"])
    windows = None if job.get("windows") is None else np.array(job["windows"], dtype=np.int64)
    try:
        out = [[L, H, time_step(job["V"], job["E"], H, L, job["B"], job["T"], cell, 0.0,
                                job["device"], windows=windows)] for L, H in job["nets"]]
    except (CharlstmError, MemoryError) as e:
        print(e if isinstance(e, CharlstmError) else OUT_OF_MEMORY, file=sys.stderr)
        sys.exit(USER_ERROR)
    print(json.dumps(out))


class _Settings:
    """The config being resolved, a copy of the caller's: what the user set stays; `put` records
    each choice with its reason (an empty reason: taken as it is, shown in the report's last
    line)."""

    def __init__(self, cfg, explicit):
        self.cfg, self.explicit, self.rows = copy.deepcopy(cfg), set(explicit), []

    def put(self, key, value, why, force=False):
        if key in self.explicit and not force:
            self.rows.append((key, get(self.cfg, key), "yours"))
            return
        section, name = key.split(".")
        setattr(getattr(self.cfg, section), name, value)
        self.rows.append((key, value, why))


class Plan(NamedTuple):
    """What a net would do with the budget."""
    steps: float         # updates
    chars: float         # characters read
    epochs: float        # readings of the training text
    params: int
    core: int            # the LSTM's parameters (the law's N)
    loss: float          # the loss law's prediction


def choose(cfg, explicit, corpus, timer=None):
    """Resolve `cfg` (train.recipe auto, train.max_minutes the budget) for `corpus` on this
    machine; returns a Choice whose cfg is a plain config with train.recipe off (`cfg` itself is
    left as it is).

    `explicit`: the dotted keys the user set, which keep their values. `timer(V, E, H, L, B, T,
    cell, dropout, device)`, if given, returns seconds per step in this process (tests pass a
    model machine); by default a child process times the nets (time_apart).
    """
    minutes = cfg.train.max_minutes
    if minutes is None:
        raise CharlstmError("train.recipe: auto needs a time budget: give --minutes N or set "
                            "train.max_minutes")
    check_minutes(minutes)
    s = _Settings(cfg, explicit)
    n_total, V = len(corpus.tokens), len(corpus.vocab)
    n_train = _split_and_batch(s, n_total, corpus.description)
    B, T = s.cfg.train.batch_size, s.cfg.train.seq_len
    one_layer = _one_layer(s, V)
    step_time, timing, spent = _speeds(s, V, timer, _windows(corpus.tokens, n_train, B, T),
                                       one_layer)
    budget = max(60 * minutes - spent, 1.0)
    cell, E = Cell.of_config(s.cfg.model), s.cfg.model.embedding_size

    like = nearest_corpus(bits_per_char(corpus))

    def plan_of(net):
        steps = budget / step_time[net]
        chars = steps * B * T
        core = params_of(V, E, net[1], net[0], cell, core=True)
        return Plan(steps, chars, chars / n_train, params_of(V, E, net[1], net[0], cell), core,
                    predicted_loss(net[0], core, chars, like))

    plan = {net: plan_of(net) for net in step_time}.__getitem__      # each net's, once

    L, H = _size(s, plan, list(step_time), n_train, minutes, one_layer)
    notes = [_predictions(plan, (L, H), list(step_time), like, n_train),
             *_outside(n_total, V, minutes, plan((L, H)), s.cfg.train.device)]
    steps, epochs = plan((L, H)).steps, plan((L, H)).epochs
    heavy = _regularize(s, epochs, minutes)
    _average_and_evaluations(s, steps, heavy, budget, n_total * s.cfg.data.val_fraction,
                             B * T / step_time[L, H])
    s.put("train.max_minutes", round(budget / 60, 3),     # the timing comes off the budget
          f"{minutes:g} minutes less the {spent:.1f} s of timing", force=True)
    s.cfg.train.recipe = "off"                             # resolved: a plain config from here on
    return Choice(s.cfg, s.rows, timing, spent, notes, {net: plan(net) for net in step_time})


def _split_and_batch(s, n_total, description):
    """The validation split (a tenth of the text, at most VAL_CHARS, so an evaluation is quick),
    FIXED's settings, and fewer batch rows for a short text. Returns the training characters."""
    val = min(0.1, max(VAL_CHARS / max(n_total, 1), 0.001))
    s.put("data.val_fraction", round(val, 6),
          f"{int(n_total * val):,} of {n_total:,} characters held out for validation")
    d = s.cfg.data
    n_train = int(n_total * (1 - d.val_fraction - d.test_fraction))
    steps = s.cfg.train.max_steps if "train.max_steps" in s.explicit else None
    for key, value in FIXED.items():
        if key == "optim.warmup_steps" and steps is not None and steps <= value:
            s.put(key, steps // 10, f"a tenth of your train.max_steps ({steps:,})")
        else:                                      # (a warmup must end before the steps do)
            s.put(key, value, "")
    B, T = s.cfg.train.batch_size, s.cfg.train.seq_len
    if n_train < B * T + 1:                        # a short text: fewer rows, same window
        if n_train < T + 2 or "train.batch_size" in s.explicit:
            raise CharlstmError(
                f"{description} has {n_train:,} characters to train on, too few for even "
                f"one batch of {T}-character windows (train.seq_len); use a longer text (a few "
                "thousand characters at least)")
        s.put("train.batch_size", (n_train - 1) // T, "")
    return n_train


def _windows(tokens, n_train, B, T):
    """B windows of T + 1 tokens from evenly spaced places of the training text (the timing's
    batch: the text's own characters)."""
    starts = np.linspace(0, max(n_train - T - 1, 0), B).astype(np.int64)
    return np.stack([np.asarray(tokens[a:a + T + 1], dtype=np.int64) for a in starts])


def _one_layer(s, V):
    """Why the recipe takes one layer for a vocabulary of V, or "" where the law chooses the
    layers (or the user set them). Two layers only inside the fitted vocabulary range: outside
    it the law scores its best two-layer net level with its one-layer choice, and on fortunes-zh
    (6,173 symbols) two layers ended behind at both budgets tried, by 0.067 at 10 minutes (two
    seeds each) and 0.009 at 30 (benchmarks/RESULTS.md, "Two layers on a large vocabulary")."""
    lo, hi = FITTED["symbols"]
    if "model.num_layers" in s.explicit or lo <= V <= hi:
        return ""
    return f"one layer: the law's two layers were fitted on texts of {lo}-{hi} symbols, not {V:,}"


def _speeds(s, V, timer, windows=None, one_layer=""):
    """1. Speed: for each layer count a few widths are timed, and the others read off the lines
    through them (a step costs a fixed overhead plus a part proportional to its matrix
    products). A CPU times 128 and 512; a GPU, whose small steps cost about the same, 128, 1024
    and 2048 (one line through 128 and 1024 read a GPU's 1 x 2048 32% slow and 2 x 2048 25%
    fast: benchmarks/RESULTS.md, "The recipe on a GPU"). Returns ({(layers, width): seconds per
    step}, a line saying what was measured, the seconds the timing took)."""
    m, t = s.cfg.model, s.cfg.train
    cell, E, device, B, T = Cell.of_config(m), m.embedding_size, t.device, t.batch_size, t.seq_len
    depths = [m.num_layers] if "model.num_layers" in s.explicit else [1] if one_layer else [1, 2]
    widths = ([m.hidden_size] if "model.hidden_size" in s.explicit else
              list(GPU_WIDTHS if device == "cuda" else WIDTHS))
    top = max(widths) if device == "cuda" else min(max(widths), 512)
    inner = (1024,) if device == "cuda" else ()
    timed = sorted({min(widths), top, *(H for H in inner if min(widths) < H < top)})
    tic = time.perf_counter()
    sizes = [(L, H) for L in depths for H in timed]
    measured = ({(L, H): timer(V, E, H, L, B, T, cell, 0.0, device) for L, H in sizes}
                if timer else time_apart(sizes, V, E, B, T, cell, device, windows))
    spent = time.perf_counter() - tic
    step_time = {}
    for L in depths:
        flops = {H: matmul_flops_per_char(L, H, V, cell.gates) for H in widths + timed}
        for H in widths:       # between two timed widths, or past the last (never cheaper)
            h1 = next((h for h in timed[1:] if h >= H), timed[-1])
            h0 = timed[max(timed.index(h1) - 1, 0)]
            t0, t1 = measured[L, h0], measured[L, h1]
            slope = (t1 - t0) / (flops[h1] - flops[h0]) if h1 != h0 else 0.0
            if H > h1:
                slope = max(slope, 0.0)
            step_time[L, H] = max(t0 + slope * (flops[H] - flops[h0]), 1e-6)
    timing = (f"timed training steps here for {spent:.1f} s: "
              + ", ".join(f"{L} x {H} {B * T / t:,.0f} chars/s" for (L, H), t in measured.items()))
    return step_time, timing, spent


def law_bracket(layers, params, chars):
    """The loss law without a corpus's floor and scale (LAW): what the recipe minimizes, for a
    net of `layers` layers and `params` LSTM parameters that reads `chars` characters."""
    k, m, beta = (LAW["k2"], LAW["m2"], LAW["beta2"]) if layers > 1 else (1.0, 1.0, LAW["beta"])
    return LAW["A"] * k / params ** LAW["alpha"] + LAW["B"] * m / chars ** beta


def bits_per_char(corpus):
    """bz2's bits per character of the first BPC_CHARS of a corpus: how hard it is to predict,
    measured as benchmarks/fit.py measured the fit corpora."""
    text = corpus.vocab.decode(np.asarray(corpus.tokens[:BPC_CHARS]))
    return 8 * len(bz2.compress(text.encode("utf-8"), 9)) / max(len(text), 1)


def nearest_corpus(bpc):
    """(name, E, s) of the fit corpus nearest to `bpc` bits per character (LIKE)."""
    name = min(LIKE, key=lambda c: abs(LIKE[c][0] - bpc))
    return name, LIKE[name][1], LIKE[name][2]


def predicted_loss(layers, params, chars, like):
    return like[1] + like[2] * law_bracket(layers, params, chars)


def _size(s, plan, nets, n_train, minutes, one_layer=""):
    """2. Size: of the nets that get MIN_STEPS updates and have at most MAX_PER_CHAR parameters
    per training character, the one the loss law predicts best (`one_layer`: why the nets are of
    one layer). Returns (layers, width)."""
    able = [net for net in nets if plan(net).steps >= MIN_STEPS]
    if not able:
        L, H = max(nets, key=lambda net: plan(net).steps)
        most = plan((L, H)).steps
        raise CharlstmError(
            f"a budget of {minutes:g} minute{'' if minutes == 1 else 's'} gives even a {L} x {H} "
            f"net only {most:.0f} training steps here (at least {MIN_STEPS} are needed); give "
            f"more minutes, e.g. --minutes {math.ceil(minutes * MIN_STEPS / max(most, 1))}")
    fits = [net for net in able if _fits(plan(net), n_train)]
    if fits:
        L, H = min(fits, key=lambda net: plan(net).loss)
        why = "the loss law's best for this budget at this machine's speed"
        if len(fits) < len(able):
            why += (f"; nets with over {MAX_PER_CHAR:g} parameters per character of the text "
                    "left out (the most of the fitted runs)")
    else:
        L, H = min(able, key=lambda net: plan(net).core)
        why = (f"the smallest net: even it has over {MAX_PER_CHAR:g} parameters per character of "
               "the text (the most of the fitted runs); a longer text would do better")
    p = plan((L, H))
    s.put("model.num_layers", L, f"{one_layer}; the width: {why}" if one_layer else why)
    s.put("model.hidden_size", H,
          f"{L} x {H}, {p.params / 1e6:.2f}M parameters: {p.steps:,.0f} steps read "
          f"{p.chars / 1e6:.1f}M characters ({p.epochs:.1f} epochs of {n_train:,})")
    return s.cfg.model.num_layers, s.cfg.model.hidden_size


def _fits(p, n_train):
    """Whether a net's Plan gets MIN_STEPS updates and has at most MAX_PER_CHAR parameters per
    training character."""
    return p.steps >= MIN_STEPS and p.core <= MAX_PER_CHAR * n_train


def _predictions(plan, chosen, nets, like, n_train):
    """One line: the law's predicted validation loss of the choice and of its neighbours that
    fit (the next narrower and wider net, and the best of the other layer count)."""
    L, H = chosen
    nets = [net for net in nets if _fits(plan(net), n_train) or net == chosen]
    same = sorted(net for net in nets if net[0] == L)
    i = same.index(chosen)
    near = same[max(i - 1, 0):i] + same[i + 1:i + 2]
    other = [net for net in nets if net[0] != L]
    if other:
        near.append(min(other, key=lambda net: plan(net).loss))
    best = plan(chosen).loss
    shown = ", ".join(f"{a} x {b} {plan((a, b)).loss - best:+.3f}" for a, b in near)
    return (f"  predicted validation loss: {best:.2f} for {L} x {H}" + (f"; {shown}" if shown
            else "") + f" (the loss law, with the floor and scale of {like[0]}, the fit corpus "
            "nearest in bz2 bits per character: for another text a rough figure, from 1.2 below "
            "to 0.5 above the measured loss on the study's held-out texts; the choice rests on "
            "the differences)")


def _outside(n_total, V, minutes, p, device):
    """Lines saying where this input lies outside the law's fitted range (FITTED)."""
    values = {"text": (n_total, f"{n_total:,} characters"),
              "symbols": (V, f"{V:,} symbols"),
              "minutes": (minutes, f"{minutes:g} minute{'' if minutes == 1 else 's'}"),
              "read": (p.chars, f"{p.chars / 1e6:.1f}M characters read"),
              "params": (p.core, f"{p.core:,} LSTM parameters"),
              "epochs": (p.epochs, f"the text read {p.epochs:,.0f} times")}
    far = [f"{said} (fitted: {lo:,.0f}-{hi:,.0f})" if key not in ("read", "epochs") else
           f"{said} (fitted: {lo / 1e6:.1f}M-{hi / 1e6:.1f}M)" if key == "read" else
           f"{said} (fitted: up to {hi}; the budget mostly re-reads it)"
           for key, (value, said) in values.items()
           for lo, hi in [FITTED[key]] if not lo <= value <= hi]
    if device == "cuda":
        far.append("a GPU's speed (the law was fitted to CPU runs)")
    return [f"  the law extrapolates here: {'; '.join(far)}"] if far else []


def _regularize(s, epochs, minutes):
    """3. Regularization from the epochs (and, below 3, the budget); returns whether it is the
    full set (past OVERFIT_EPOCHS: window dropout, weight drop, weight decay)."""
    if epochs <= 3 and minutes < DROPOUT_MINUTES:
        drop, why = 0.0, f"{epochs:.1f} epochs: too few to memorize the text"
    elif epochs <= 3:
        drop, why = 0.1, (f"{epochs:.1f} epochs in {minutes:g} minutes: light dropout pays in "
                          f"runs of {DROPOUT_MINUTES}+ minutes")
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
    return heavy


def _average_and_evaluations(s, steps, heavy, budget, val_chars, chars_per_second):
    """4. A weight average over the last AVERAGE of the steps (AVERAGE_HEAVY under the full set);
    evaluations that take under EVAL_SHARE of the budget."""
    share = AVERAGE_HEAVY if heavy else AVERAGE
    ema = min(max(1 - 1 / (share * steps), 0.99), 0.999)
    s.put("optim.ema", round(ema, 4), f"averages about the last {1 / (1 - ema):,.0f} steps")
    eval_seconds = val_chars / (EVAL_SPEEDUP * chars_per_second)
    evals = int(min(10, max(1, EVAL_SHARE * budget / max(eval_seconds, 1e-9))))
    s.put("train.eval_minutes", round(budget / 60 / evals, 3),
          f"{evals} evaluations of about {eval_seconds:.0f} s each")


if __name__ == "__main__":
    _time_job()
