"""A training run in its folder: start or resume it, then the loop, with evaluation, metrics and
checkpoints that let it continue exactly where it stopped.

    run = Run.start(cfg, out_dir)          # or Run.resume(run_dir, ["train.max_steps=9000"])
    run.train(progress=True)

A step itself (forward, backward, clip, AdamW, weight average) and the state it changes are
step.py's; this module decides when to evaluate, save, log and stop. A checkpoint holds everything
the run's future depends on (step.TrainState, training time, best validation loss), so a run
resumed from step k makes the same updates, and logs the same losses, as the uninterrupted run
from step k on. runstate.py says how checkpoints are stored and refuses a resume onto another
token stream; runfolder.py names the folder's files and holds its lock (start and resume take it
before they touch the folder).

A time budget alone (train.max_minutes, no max_steps or max_epochs) becomes a step count at the
end of the warmup, from the speed of the steps so far (`Run.plan`): the cosine starts there, as
it would with that many steps given, config.yaml records train.max_steps (and optim.hold_steps,
the plan's step), and training that config again repeats the run bit for bit. The minutes stay a
guard: a run that falls behind its plan ends at the budget, with a warning.
"""

import contextlib
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend, runfolder, runstate
from .blas import set_threads
from .config import (ARCHITECTURE, Config, config_from_dict, config_to_dict, get, replaced,
                     save_config)
from .corpus import fine_tune_tokens, prepare
from .data import Batches, split
from .distributed import together, world
from .errors import CharlstmError, Diverged, Interrupted
from .evaluate import bpc, evaluate
from .malloc import keep_freed_memory
from .runfolder import BEST, LAST
from .step import TrainState, learning_rate, next_window, train_step

OVERFIT_EPOCHS = 10   # past this many epochs a net memorizes its text without regularization
PLAN_STEPS = 20      # a time budget is planned at the warmup's end, after this many steps at least
# and planned again a third of the way through its budget, a minute in at the earliest
# (Run.replan): a run's first minute is slower than the rest (12% in the median study run), and a
# second plan made from it alone left up to a quarter of the budget unused (RESULTS.md)
REPLAN_SECONDS = 60
REPLAN_SHARE = 1 / 3


class Run:
    """One training run: its folder, data, TrainState, clock and best validation loss."""

    def __init__(self, cfg, out_dir, vocab, tokens, corpus, init_from=None):
        """tokens: the corpus's (or, fine-tuning, the corpus mapped into `vocab`). The run keeps
        its own copy of `cfg`, with model.vocab_size filled in."""
        self.cfg = replaced(cfg, {"model.vocab_size": len(vocab)})
        backend.require(self.cfg.train.device)       # before any file is written: one clear line
        self.out, self.vocab, self.source = Path(out_dir), vocab, corpus.description
        self.stream = runstate.stream_of(corpus, tokens)
        self.init_from = init_from        # the checkpoint a fine-tuning run started from
        self.lock = None                  # runfolder.FolderLock: rank 0 holds it while it may write
        t = self.cfg.train
        self.train_tokens, self.val_tokens, self.test_tokens = split(
            tokens, self.cfg.data.val_fraction, self.cfg.data.test_fraction)
        self.batches = Batches(self.train_tokens, t.batch_size, t.seq_len,
                               shifted=t.windows == "shifted")
        self.comm = world()               # data-parallel under mpirun: this process's batch rows
        self.is_main = self.comm is None or self.comm.rank == 0
        self.ts = TrainState.new(self.cfg, len(vocab),
                                 self.comm.rows(t.batch_size) if self.comm else slice(None))
        self.train_time, self.best_val = 0.0, math.inf
        self.step_times = []              # seconds of each step until the run is re-planned
        self.planned_times = 0            # how many of them came before the first plan
        self.clock_schedule = False       # a run begun before plans: its rate follows the clock
        self.stop_signal = None           # set by SIGINT / SIGTERM: stop after this step
        self.evaluated_at = None          # the step of the latest evaluation
        self.echo = tqdm.write            # where train() sends its lines (a skipped step's too)

    @property
    def params(self):
        return self.ts.params

    @property
    def step(self):
        return self.ts.step

    # --- the loop -------------------------------------------------------------------------

    def train(self, progress=True, echo=tqdm.write):
        """Train until a stop condition; evaluate and checkpoint along the way and at the end.

        SIGINT / SIGTERM stop it after the current step with a checkpoint (raising Interrupted);
        a divergent step raises Diverged or is skipped, as train.on_divergence says.
        """
        echo = self.echo = _begin(self, echo)
        t, total, first = self.cfg.train, self.total_steps(), self.step
        timed = total is None
        bar = _Bar(self, total, disable=not (progress and self.is_main))
        self.warn_overfit(total, None, echo)
        try:
            with _stop_on_signals(self):
                while total is None or self.step < total:
                    if self.out_of_time():
                        echo(f"time budget of {t.max_minutes} minutes reached at step {self.step}"
                             + (f", before the planned {total:,}: the machine ran slower "
                                "than when the run was planned" if timed and total else ""))
                        break
                    tic = time.perf_counter()
                    loss, lr, norm = self.train_step()
                    dt = time.perf_counter() - tic
                    self.train_time += dt
                    if timed and not self.cfg.optim.replan_step:
                        self.step_times.append(dt)
                    bar.update(lr, dt)
                    if self.step == first + 20 and timed:           # a time budget: now the
                        self.warn_overfit(total, dt, echo)          # speed is known
                    if total is None and not self.clock_schedule and \
                            self.step >= self.plan_at():
                        total = self.plan(echo)
                    elif timed and total and not self.cfg.optim.replan_step and self.decide(
                            self.train_time >= self.replan_at() and
                            len(self.step_times) >= self.planned_times + PLAN_STEPS):
                        total = self.replan(echo)
                    if self.step % t.log_every == 0 and self.is_main:
                        self.log(step=self.step, epoch=round(self.epoch_progress(), 4),
                                 train_loss=loss, lr=lr, grad_norm=norm,
                                 chars_per_sec=t.batch_size * t.seq_len / dt,
                                 train_time=round(self.train_time, 3))
                    evaluate_now, self.stop_signal = self.decide(
                        (self.step % t.eval_every == 0 or self.minute_mark(dt), self.stop_signal))
                    if evaluate_now:
                        self.evaluate_and_save(echo)
                    if self.stop_signal is not None:
                        self.stop_for_signal()
                if self.evaluated_at != self.step:
                    self.evaluate_and_save(echo)
        except (Interrupted, Diverged):
            raise                                 # every rank reached the same decision
        except BaseException as e:
            if self.comm:                         # one rank failed alone: end the whole job
                sys.stderr.write(f"charlstm rank {self.comm.rank}: {e}\n")
                sys.stderr.flush()
                self.comm.abort(1)
            raise
        finally:
            bar.close()
            if self.lock is not None:
                self.lock.release()
                self.lock = None
        return self

    def train_step(self):
        """One step (step.train_step) at the schedule's rate; returns (loss, lr, norm). A
        divergent step stops the run or is skipped, as train.on_divergence says."""
        t = self.cfg.train
        x, y = next_window(self.ts, self.batches, t.seed)
        time_fraction = self.train_time / (60 * t.max_minutes) if self.clock_schedule else None
        lr = learning_rate(self.ts, self.cfg, self.total_steps(), time_fraction)
        loss, norm, problem = train_step(self.ts, self.cfg, x, y, lr, self.comm)
        if problem:
            self.on_divergence(problem, lr)
        return loss, lr, norm

    def decide(self, value):
        """Rank 0's decision on every rank (data-parallel runs must take the same branches)."""
        return self.comm.decide(value) if self.comm else value

    def total_steps(self):
        """Step at which training ends (max_steps or max_epochs, the earlier); None if time only."""
        t = self.cfg.train
        limits = [t.max_steps] if t.max_steps else []
        if t.max_epochs:
            limits.append(steps_in(t.max_epochs * self.batches.num_batches, math.ceil))
        return min(limits) if limits else None

    def limits_reached(self):
        """[(limit, the --set that lifts it)] for each of train.max_steps, max_epochs and
        max_minutes that the run has reached; a resumed run needs every one of them raised."""
        t, out = self.cfg.train, []
        up = lambda x: f"{math.ceil(x * 1000) / 1000:g}"     # noqa: E731 (never below x)
        if t.max_steps and self.step >= t.max_steps:
            out.append(("train.max_steps", f"--set train.max_steps=N (N > {self.step})"))
        if t.max_epochs and self.step >= steps_in(t.max_epochs * self.batches.num_batches,
                                                  math.ceil):
            out.append(("train.max_epochs", "--set train.max_epochs=E (E > "
                        f"{up(self.step / self.batches.num_batches)})"))
        if t.max_minutes and self.train_time >= 60 * t.max_minutes:
            out.append(("train.max_minutes", "--set train.max_minutes=M (M > "
                        f"{up(self.train_time / 60)})"))
        return out

    def plan_at(self):
        """The step at which a time-budgeted run fixes its step count: the warmup's end."""
        return max(self.cfg.optim.warmup_steps, PLAN_STEPS)

    def plan(self, echo):
        """Fix a time budget's step count from the median step time so far (rank 0's): the rest
        of the budget in steps; the cosine's decay starts here (optim.hold_steps, the warmup's
        end unless the warmup is shorter than PLAN_STEPS). Both go into the run's config, its
        config.yaml and every later checkpoint. Returns the total."""
        t, o = self.cfg.train, self.cfg.optim
        left = 60 * t.max_minutes - self.train_time
        total = self.step + max(1, steps_in(left / float(np.median(self.step_times))))
        total = self.decide(max(total, o.warmup_steps + 1))
        self.cfg = replaced(self.cfg, {"train.max_steps": total, "optim.hold_steps": self.step})
        self.planned_times = len(self.step_times)
        if self.is_main:
            save_config(self.cfg, self.out / runfolder.CONFIG)
            rate = t.batch_size * t.seq_len * self.step / self.train_time
            echo(f"planned: {total:,} steps in the {t.max_minutes:g}-minute budget, at the "
                 f"{rate:,.0f} chars/s of the first {self.train_time:.0f} s (train.max_steps "
                 f"{total}, optim.hold_steps {self.step} in {runfolder.CONFIG})")
        return total

    def replan_at(self):
        """Seconds of training after which a planned run plans again (REPLAN_SHARE of its budget,
        at least REPLAN_SECONDS)."""
        return max(REPLAN_SECONDS, REPLAN_SHARE * 60 * self.cfg.train.max_minutes)

    def replan(self, echo):
        """A third of the way through a planned run's budget (replan_at), plan again from the
        median step time since the first plan: the size stays, the step count follows the speed
        seen (the machine's speed drifts). The cosine's progress so far is kept and the rest of it
        spread over the steps left (optim.replan_step and optim.replan_total; optim.lr_at), so
        training the saved config again gives the same rates. Returns the new total."""
        t = self.cfg.train
        since = self.step_times[self.planned_times:]
        left = 60 * t.max_minutes - self.train_time
        total = self.decide(self.step + max(1, steps_in(left / float(np.median(since)))))
        self.cfg = replaced(self.cfg, {"train.max_steps": total, "optim.replan_step": self.step,
                                       "optim.replan_total": t.max_steps})
        self.step_times = []
        if self.is_main:
            save_config(self.cfg, self.out / runfolder.CONFIG)
            rate = t.batch_size * t.seq_len * len(since) / float(np.sum(since))
            echo(f"planned again after {self.train_time:.0f} s: {total:,} steps (the first plan "
                 f"said {t.max_steps:,}), at the {rate:,.0f} chars/s since (train.max_steps, "
                 f"optim.replan_step {self.step}, optim.replan_total {t.max_steps} in "
                 f"{runfolder.CONFIG})")
        return total

    def out_of_time(self):
        """Whether the time budget (train.max_minutes) is spent, as rank 0 measured it."""
        t = self.cfg.train
        return self.decide(bool(t.max_minutes and self.train_time >= 60 * t.max_minutes))

    def minute_mark(self, dt):
        """True when this step's time crossed a multiple of train.eval_minutes."""
        every = self.cfg.train.eval_minutes
        if not every:
            return False
        return (self.train_time // (60 * every)) > ((self.train_time - dt) // (60 * every))

    def epoch_progress(self):
        return self.ts.epoch + self.ts.window / self.batches.num_batches

    def warn_overfit(self, total, step_seconds, echo):
        """overfit_warning for this run: `total`, its last step, or None when a time budget ends
        it; then the warning waits for `step_seconds`, a step's measured time."""
        m, t = self.cfg.model, self.cfg.train
        if m.dropout or m.weight_drop or not self.is_main:
            return
        if total is None and step_seconds is not None:
            total = self.step + (60 * t.max_minutes - self.train_time) / step_seconds
        if total is not None and total / self.batches.num_batches > OVERFIT_EPOCHS:
            echo(overfit_warning(len(self.train_tokens), total / self.batches.num_batches))

    # --- stops, evaluation and files --------------------------------------------------------

    def on_divergence(self, problem, lr):
        if self.cfg.train.on_divergence == "skip":
            self.ts.lr_scale *= 0.5               # every rank: they must stay in step
            if self.is_main:                      # rank 0 alone logs and reports
                self.log(step=self.step, skipped=problem, lr_scale=self.ts.lr_scale)
                self.echo(f"step {self.step}: {problem}; step skipped, learning rate halved "
                          f"to {lr / 2:.3g}")
            return
        kept = (f"{self.out / LAST} and {BEST} are untouched" if runfolder.holds_run(self.out)
                else "no checkpoint had been written yet")
        raise Diverged(
            f"step {self.step}: {problem}; training stopped ({kept}). Lower optim.lr (now "
            f"{lr:.3g}) or optim.grad_clip, or set train.on_divergence=skip to skip such steps "
            "and halve the learning rate")

    def stop_for_signal(self):
        name = signal.Signals(self.stop_signal).name
        state = self.full_state()
        if self.is_main:
            self.save(self.out / LAST, state)
        raise Interrupted(self.stop_signal, f"{name} received: stopped after step {self.step} and "
                          f"saved {self.out / LAST}; resume with:  charlstm train --resume "
                          f"{self.out}")

    def evaluate_and_save(self, echo):
        """Validation loss, then best.npz (if it improved), last.npz and a sample; rank 0 alone."""
        self.evaluated_at = self.step
        state = self.full_state()
        if not self.is_main:
            return
        params = self.ts.eval_params()
        val, _, _ = evaluate(params, self.val_tokens, start=state)
        improved = val < self.best_val
        self.best_val = min(self.best_val, val)
        self.log(step=self.step, epoch=round(self.epoch_progress(), 4), val_loss=val,
                 val_bpc=bpc(val), train_time=round(self.train_time, 3))
        echo(f"step {self.step} (epoch {self.epoch_progress():.2f}): val loss {val:.4f} "
             f"nats/char, {bpc(val):.4f} bits/char" + (" (best)" if improved else ""))
        if improved:
            self.save(self.out / BEST, state)
        self.save(self.out / LAST, state)
        runfolder.keep_step_checkpoint(self.out, self.step, self.cfg.train.keep_last)
        if self.cfg.train.sample_length > 0:
            echo("--- sample ---\n" + self.sample(params, state) + "\n--------------")

    def sample(self, params, state):
        """train.sample_length characters at temperature 0.8, the same for the same step."""
        from .sample import generate
        return "".join(generate(params, self.vocab, length=self.cfg.train.sample_length,
                                rng=np.random.default_rng(self.step), temperature=0.8,
                                start=state))

    def full_state(self):
        """The carried (h, c) of the whole batch: gathered from every rank (on rank 0)."""
        if not self.comm:
            return self.ts.state
        h, c = (self.comm.gather_rows(s, axis=1) for s in self.ts.state)
        return (h, c) if self.is_main else None

    def save(self, path, state=None):
        """A checkpoint of the run (runstate.py); `state`: the whole batch's, under MPI."""
        runstate.save_run(path, self.cfg, self.vocab, self.ts,
                          {"train_time": self.train_time, "best_val_loss": self.best_val},
                          self.init_from, self.stream, state)

    def log(self, **record):
        runfolder.append_metrics(self.out, record)


def start(cfg, out_dir, init_from=None, progress=False, echo=tqdm.write):
    """Run.start: a new run in out_dir (which must not already hold a run's checkpoint).

    init_from: a checkpoint whose weights (and so architecture and vocabulary) the run starts
    from, to fine-tune on new text; characters of the text outside that vocabulary are
    skipped or replaced as data.unknown says, and reported.
    """
    with runfolder.holding(out_dir) as lock:
        if runfolder.holds_run(out_dir):
            raise CharlstmError(f"'{out_dir}' already holds a run; continue it with "
                                f"--resume {out_dir}, or choose another folder with --out")
        corpus = prepare(cfg.data, progress, echo)
        if init_from is None:
            run = Run(cfg, out_dir, corpus.vocab, corpus.tokens, corpus)
        else:
            params, vocab, saved, _ = runstate.load_model(init_from)
            cfg = replaced(cfg, {key: get(saved, key) for key in ARCHITECTURE})
            tokens = fine_tune_tokens(corpus, vocab, cfg.data.unknown, echo)
            run = Run(cfg, out_dir, vocab, tokens, corpus, init_from=str(init_from))
            for name, p in run.params.items():
                p[...] = params[name]
        run.lock = lock
    return run

def resume(run_dir, overrides=(), progress=False, echo=tqdm.write):
    """Run.resume: continue the run in run_dir from its last.npz, with --set `overrides`
    ("key=value") on its config (or a whole Config to continue with). What would change its
    stream of windows is refused: see runstate.check_stream."""
    path = Path(run_dir) / LAST
    with together(world()):              # (one machine of several may lack it)
        if not Path(run_dir).is_dir():
            raise CharlstmError(f"run folder '{run_dir}' not found")
    with runfolder.holding(run_dir) as lock:
        if not path.exists():
            raise CharlstmError(f"'{run_dir}' has no checkpoint ({LAST}) to resume from; "
                                "start it again without --resume")
        saved = runstate.load_run(path)
        cfg = overrides if isinstance(overrides, Config) else \
            config_from_dict(config_to_dict(saved.cfg), str(path), overrides)
        t, was = cfg.train, saved.cfg.train
        if saved.cfg.optim.hold_steps and was.max_minutes and t.max_minutes != was.max_minutes \
                and t.max_steps == was.max_steps:     # a new budget: the old one's plan is void
            cfg = replaced(cfg, {"train.max_steps": None, "optim.hold_steps": 0,
                                 "optim.replan_step": 0, "optim.replan_total": 0})
        corpus = prepare(cfg.data, progress, echo)
        tokens = corpus.tokens
        if saved.init_from is not None:       # a fine-tuning run: its text mapped as before
            tokens = fine_tune_tokens(corpus, saved.vocab, cfg.data.unknown, _quiet)
        runstate.check_stream(run_dir, saved, cfg, corpus, tokens)
        try:
            run = Run(cfg, run_dir, saved.vocab, tokens, corpus, init_from=saved.init_from)
        except CharlstmError as e:
            if cfg.train.device == "cuda" == was.device:     # a GPU's run, resumed without one
                raise CharlstmError(f"{e}; or go on on the CPU: --device cpu") from None
            raise
        run.ts.restore(saved)
        run.train_time, run.best_val = (saved.position["train_time"],
                                        saved.position["best_val_loss"])
        # Saved unplanned past the planning point: begun before plans existed. It goes on as it
        # began, its rate following the clock.
        run.clock_schedule = (bool(cfg.train.max_minutes) and run.total_steps() is None
                              and run.step >= run.plan_at())
        reached = run.limits_reached()
        if reached:
            raise CharlstmError(f"run '{run_dir}' already finished at step {run.step} ("
                                f"{', '.join(k for k, _ in reached)} reached); to train longer, "
                                f"resume with {' '.join(s for _, s in reached)}")
        run.lock = lock
    return run


Run.start, Run.resume = staticmethod(start), staticmethod(resume)


def steps_in(x, whole=int):
    """A step count from a float: `whole` (int, or math.ceil) of x, or at most sys.maxsize steps,
    more than any run takes: an absurd but finite train.max_epochs or train.max_minutes (1e308)
    makes x overflow to inf, which no int holds."""
    return whole(x) if x < sys.maxsize else sys.maxsize


def overfit_warning(chars, epochs):
    """The warning for a run that will read its `chars`-character text `epochs` times, past
    OVERFIT_EPOCHS, with neither dropout nor weight drop: such a net memorizes it."""
    return (f"warning: this run will read its {chars:,}-character training text about "
            f"{epochs:,.0f} times (epochs) with no dropout, and will overfit it (validation loss "
            "rising while train loss falls); add --set model.dropout=0.2, train for less, or let "
            "charlstm choose for your text: --minutes N")


def _begin(run, echo):
    """Before the first step: threads, freed memory kept (malloc.py), device, every rank on rank
    0's weights, the weight average, the folder (lock, config.yaml, metrics past the checkpoint
    dropped) and a line saying what trains. Returns the echo to use (silent on ranks other than
    0)."""
    t = run.cfg.train
    with together(run.comm):                 # a failure on one rank ends every rank
        if t.threads:
            set_threads(t.threads)
        keep_freed_memory()
        xp = backend.require(t.device)
        if run.comm and xp is not np:        # one GPU per rank, round robin
            xp.cuda.Device(run.comm.rank % xp.cuda.runtime.getDeviceCount()).use()
        run.ts.to_device(t.device)
        if run.is_main:
            if run.lock is None:             # let go by an earlier train(): take it again
                run.lock = runfolder.FolderLock(run.out).acquire()
            runfolder.tidy(run.out, run.step)
            save_config(run.cfg, run.out / runfolder.CONFIG)
    if run.comm:
        run.comm.broadcast_(run.ts.flat)
    run.ts.keep_average(run.cfg.optim.ema)
    if not run.is_main:
        return _quiet
    ranks = f" on {run.comm.size} MPI ranks" if run.comm else ""
    echo(f"training on {run.source}{ranks}: {len(run.train_tokens):,} train / "
         f"{len(run.val_tokens):,} val characters, vocabulary {len(run.vocab)}, "
         f"{run.ts.flat.size:,} parameters")
    return echo


class _Bar:
    """The progress bar: over the time budget (training minutes, with an ETA) when time alone
    ends the run, over the steps otherwise; its postfix shows step, epoch, loss, lr and speed."""

    def __init__(self, run, total, disable):
        self.run, self.timed = run, total is None
        t = run.cfg.train
        if self.timed:
            self.drawn = run.train_time / 60
            self.bar = tqdm(total=t.max_minutes, initial=self.drawn, unit="min", disable=disable,
                            dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.1f}/{total:g} min [{elapsed}<"
                                       "{remaining}{postfix}]")
        else:
            self.bar = tqdm(total=total, initial=run.step, disable=disable, unit="step",
                            dynamic_ncols=True)

    def update(self, lr, dt):
        run, t = self.run, self.run.cfg.train
        if self.timed:                            # minutes; past the budget's end not drawn
            before, self.drawn = self.drawn, min(run.train_time / 60, t.max_minutes)
            self.bar.update(self.drawn - before)
        else:
            self.bar.update(1)
        shown = run.ts.smooth_loss if run.ts.smooth_loss is not None else math.nan
        self.bar.set_postfix({"step": run.step, "epoch": f"{run.epoch_progress():.2f}",
                              "loss": f"{shown:.3f}", "lr": f"{lr:.2e}",
                              "cps": f"{t.batch_size * t.seq_len / dt:,.0f}"}, refresh=False)

    def close(self):
        self.bar.close()


@contextlib.contextmanager
def _stop_on_signals(run):
    """The first SIGINT or SIGTERM asks the loop to stop after the current step (run.stop_signal);
    a second one raises KeyboardInterrupt at once. Checkpoint writes are atomic, so even that
    leaves the last complete checkpoint in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if run.stop_signal is not None:
            raise KeyboardInterrupt
        run.stop_signal = signum
        if run.is_main:                   # under mpirun every rank gets it: rank 0 says so
            tqdm.write(f"{signal.Signals(signum).name}: stopping after this step (again to quit "
                       "now)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _quiet(*_):
    pass
