"""The training loop: batches -> forward -> backward -> clip -> AdamW, with evaluation, metrics and
checkpoints that let a run continue exactly where it stopped.

    run = Run.start(cfg, out_dir)          # or Run.resume(run_dir, ["train.max_steps=9000"])
    run.train(progress=True)

A checkpoint holds everything the loop's future depends on: weights, optimizer moments and step,
the data position (epoch and window) and the hidden state carried into the next window, the random
generator's state (dropout masks) and the best validation loss. So a run resumed from step k makes
the same updates, and logs the same losses, as the uninterrupted run from step k on. runstate.py
says how these are stored and refuses a resume onto another token stream; runfolder.py holds the
run folder's lock (start and resume take it before they touch the folder) and its files.
"""

import contextlib
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import backend, model, optim, runfolder, runstate
from .blas import set_threads
from .config import Config, config_from_dict, config_to_dict, save_config
from .corpus import fine_tune_tokens, prepare
from .data import Batches, split
from .distributed import world
from .errors import CharlstmError, Diverged, Interrupted
from .evaluate import bpc, evaluate

OVERFIT_EPOCHS = 10   # warn past this many epochs without dropout (the recipe adds it past one)


class Run:
    """One training run: its folder, data, parameters, optimizer and position."""

    def __init__(self, cfg, out_dir, vocab, tokens, corpus):
        """tokens: the corpus's (or, fine-tuning, the corpus mapped into `vocab`)."""
        self.cfg, self.out = cfg, Path(out_dir)
        self.vocab, self.source = vocab, corpus.description
        self.stream = runstate.stream_of(corpus, tokens)
        self.lock = None                  # runfolder.FolderLock: rank 0 holds it while it may write
        self.train_tokens, self.val_tokens, self.test_tokens = split(
            tokens, cfg.data.val_fraction, cfg.data.test_fraction)
        self.batches = Batches(self.train_tokens, cfg.train.batch_size, cfg.train.seq_len,
                               shifted=cfg.train.windows == "shifted")
        # Data-parallel under mpirun: this process trains its block of the batch rows.
        self.comm = world()
        self.xp = np                      # numpy, or cupy once train() moves the run to a GPU
        self.rows = self.comm.rows(cfg.train.batch_size) if self.comm else slice(None)
        self.is_main = self.comm is None or self.comm.rank == 0
        cfg.model.vocab_size = len(vocab)
        self.flat, self.params = model.init_params(len(vocab), cfg.model,
                                                   np.random.default_rng(cfg.train.seed))
        self.gflat, self.grads = model.alloc(model.shapes_of(self.params))
        self.opt = optim.adamw_init(self.flat, optim.decay_mask_for(self.params, self.flat))
        self.ema = None                   # optim.ema: the averaged weights (flat), made in train()
        # Dropout draws from its own generator, seeded apart from initialization.
        self.rng = np.random.default_rng([cfg.train.seed, 1])
        self.step, self.epoch, self.window = 0, 0, 0
        self.state = self.zero_state()
        self.best_val = math.inf
        self.train_time = 0.0
        self.lr_scale = 1.0               # halved by each skipped divergent step
        self.smooth_loss = None           # running average of the train loss (progress bar)
        self.loss_floor = math.inf        # its lowest value, the yardstick of explode_ratio
        self.stop_signal = None           # set by SIGINT / SIGTERM: stop after this step
        self.evaluated_at = None          # the step of the latest evaluation
        self.init_from = None             # the checkpoint a fine-tuning run started from

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def start(cls, cfg, out_dir, init_from=None, progress=False, echo=tqdm.write):
        """A new run in out_dir (which must not already hold a run's checkpoint).

        init_from: a checkpoint whose weights (and so architecture and vocabulary) the run starts
        from, to fine-tune on new text; characters of the text outside that vocabulary are
        skipped or replaced as data.unknown says, and reported.
        """
        with runfolder.holding(out_dir) as lock:
            if (Path(out_dir) / "last.npz").exists():
                raise CharlstmError(f"'{out_dir}' already holds a run; continue it with "
                                    f"--resume {out_dir}, or choose another folder with --out")
            corpus = prepare(cfg.data, progress, echo)
            if init_from is None:
                run = cls(cfg, out_dir, corpus.vocab, corpus.tokens, corpus)
            else:
                params, vocab, saved, _ = runstate.load_model(init_from)
                for key in ("num_layers", "hidden_size", "embedding_size", "cell", "peepholes",
                            "coupled_gates"):
                    setattr(cfg.model, key, getattr(saved.model, key))
                tokens = fine_tune_tokens(corpus, vocab, cfg.data.unknown, echo)
                run = cls(cfg, out_dir, vocab, tokens, corpus)
                for name, p in run.params.items():
                    p[...] = params[name]
                run.init_from = str(init_from)
            run.lock = lock
        return run

    @classmethod
    def resume(cls, run_dir, overrides=(), progress=False, echo=tqdm.write):
        """Continue the run in run_dir from its last.npz, with --set `overrides` ("key=value")
        on its config (or a whole Config to continue with). What would change its stream of
        windows is refused: see runstate.check_stream."""
        path = Path(run_dir) / "last.npz"
        if not Path(run_dir).is_dir():
            raise CharlstmError(f"run folder '{run_dir}' not found")
        with runfolder.holding(run_dir) as lock:
            if not path.exists():
                raise CharlstmError(f"'{run_dir}' has no checkpoint (last.npz) to resume from; "
                                    "start it again without --resume")
            saved = runstate.load_run(path)
            cfg = overrides if isinstance(overrides, Config) else \
                config_from_dict(config_to_dict(saved.cfg), str(path), overrides)
            corpus = prepare(cfg.data, progress, echo)
            tokens = corpus.tokens
            if saved.init_from is not None:       # a fine-tuning run: its text mapped as before
                tokens = fine_tune_tokens(corpus, saved.vocab, cfg.data.unknown, _quiet)
            runstate.check_stream(run_dir, saved, cfg, corpus, tokens)
            run = cls(cfg, run_dir, saved.vocab, tokens, corpus)
            run.restore(saved)
            total = run.total_steps()
            if total is not None and run.step >= total:
                raise CharlstmError(f"run '{run_dir}' already finished at step {run.step}; to "
                                    f"train longer, resume with --set train.max_steps=N "
                                    f"(N > {run.step})")
            run.lock = lock
        return run

    def restore(self, saved):
        """Take up the run where a checkpoint (a runstate.RunState) left it."""
        shapes = model.shapes_of(self.params)
        for name, p in self.params.items():
            p[...] = saved.weights[name]
        if saved.average is not None:
            self.ema = np.empty_like(self.flat)
            for name, view in model.views(self.ema, shapes).items():
                view[...] = saved.average[name]
        for key, moments in zip("mv", saved.moments):
            for name, view in model.views(self.opt[key], shapes).items():
                view[...] = moments[name]
        h, c = saved.state
        self.state = (h[:, self.rows].copy(), c[:, self.rows].copy())
        p = saved.position
        self.step, self.epoch, self.window = p["step"], p["epoch"], p["window"]
        self.opt["t"], self.rng.bit_generator.state = p["optim_t"], p["rng"]
        self.train_time, self.best_val = p["train_time"], p["best_val_loss"]
        self.lr_scale, self.smooth_loss, self.loss_floor = (p["lr_scale"], p["smooth_loss"],
                                                            p["loss_floor"])
        self.init_from = saved.init_from

    def position(self):
        """Where the run stands, besides its arrays (runstate.POSITION)."""
        return {"step": self.step, "epoch": self.epoch, "window": self.window,
                "optim_t": self.opt["t"], "rng": self.rng.bit_generator.state,
                "train_time": self.train_time, "best_val_loss": self.best_val,
                "lr_scale": self.lr_scale, "smooth_loss": self.smooth_loss,
                "loss_floor": self.loss_floor}

    # --- the loop -------------------------------------------------------------------------

    def zero_state(self):
        m, B = self.cfg.model, self.cfg.train.batch_size
        local = B // self.comm.size if self.comm else B
        return model.init_state(m.num_layers, local, m.hidden_size, xp=self.xp)

    def to_device(self):
        """Move weights, gradients, optimizer state, weight average and carried state to
        train.device. Everything else stays on the host: data, random generator, checkpoints
        (saving copies arrays back), so a run resumes on either device."""
        device = self.cfg.train.device
        self.xp = backend.require(device)
        if self.xp is np:
            return
        if self.comm:                             # one GPU per rank, round robin
            self.xp.cuda.Device(self.comm.rank % self.xp.cuda.runtime.getDeviceCount()).use()
        shapes = model.shapes_of(self.params)
        self.flat, self.params = model.to_device(self.flat, shapes, device)
        self.gflat, self.grads = model.to_device(self.gflat, shapes, device)
        for key in ("m", "v", "decay_mask", "scratch"):
            self.opt[key] = backend.to_device(self.opt[key], device)
        if self.ema is not None:
            self.ema = backend.to_device(self.ema, device)
        self.state = tuple(backend.to_device(s, device) for s in self.state)

    def decide(self, value):
        """Rank 0's decision on every rank (data-parallel runs must take the same branches)."""
        return self.comm.decide(value) if self.comm else value

    def total_steps(self):
        """Step at which training ends (max_steps or max_epochs, the earlier); None if time only."""
        t = self.cfg.train
        limits = [t.max_steps] if t.max_steps else []
        if t.max_epochs:
            limits.append(math.ceil(t.max_epochs * self.batches.num_batches))
        return min(limits) if limits else None

    def train(self, progress=True, echo=tqdm.write):
        """Train until a stop condition; evaluate and checkpoint along the way and at the end.

        SIGINT / SIGTERM stop it after the current step with a checkpoint (raising Interrupted);
        a divergent step raises CharlstmError or is skipped, as train.on_divergence says.
        """
        cfg, t = self.cfg, self.cfg.train
        if t.threads:
            set_threads(t.threads)
        self.to_device()
        if self.comm:                             # every rank starts from rank 0's weights
            self.comm.broadcast_(self.flat)
        if cfg.optim.ema > 0 and self.ema is None:
            self.ema = self.flat.copy()
        elif cfg.optim.ema == 0:
            self.ema = None
        total = self.total_steps()
        if not self.is_main:
            echo = _quiet
        else:
            if self.lock is None:                 # let go by an earlier train(): take it again
                self.lock = runfolder.FolderLock(self.out).acquire()
            runfolder.remove_stale_temporaries(self.out)
            save_config(cfg, self.out / "config.yaml")
            runfolder.truncate_metrics(self.out, self.step)
        ranks = f" on {self.comm.size} MPI ranks" if self.comm else ""
        echo(f"training on {self.source}{ranks}: {len(self.train_tokens):,} train / "
             f"{len(self.val_tokens):,} val characters, vocabulary {len(self.vocab)}, "
             f"{self.flat.size:,} parameters")
        chars = t.batch_size * t.seq_len
        bar = self.progress_bar(total, disable=not (progress and self.is_main))
        self.warn_overfit(total, None, echo)
        first_step, drawn = self.step, self.train_time / 60
        try:
            with _stop_on_signals(self):
                while total is None or self.step < total:
                    if self.decide(bool(t.max_minutes and self.train_time >= 60 * t.max_minutes)):
                        echo(f"time budget of {t.max_minutes} minutes reached at step {self.step}")
                        break
                    tic = time.perf_counter()
                    loss, lr, norm = self.train_step()
                    dt = time.perf_counter() - tic
                    self.train_time += dt
                    if total is None:         # minutes; past the budget's end not drawn
                        drawn, before = min(self.train_time / 60, t.max_minutes), drawn
                        bar.update(drawn - before)
                    else:
                        bar.update(1)
                    shown = self.smooth_loss if self.smooth_loss is not None else math.nan
                    bar.set_postfix({"step": self.step, "epoch": f"{self.epoch_progress():.2f}",
                                     "loss": f"{shown:.3f}", "lr": f"{lr:.2e}",
                                     "cps": f"{chars / dt:,.0f}"}, refresh=False)
                    if self.step == first_step + 20 and total is None:   # a time budget: now
                        self.warn_overfit(total, dt, echo)               # the speed is known
                    if self.step % t.log_every == 0 and self.is_main:
                        self.log(step=self.step, epoch=round(self.epoch_progress(), 4),
                                 train_loss=loss, lr=lr, grad_norm=norm,
                                 chars_per_sec=chars / dt, train_time=round(self.train_time, 3))
                    evaluate_now, self.stop_signal = self.decide(
                        (self.step % t.eval_every == 0 or self.minute_mark(dt), self.stop_signal))
                    if evaluate_now:
                        self.evaluate_and_save(echo)
                    if self.stop_signal is not None:
                        self.stop_for_signal(echo)
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

    def progress_bar(self, total, disable):
        """Over the time budget (training minutes, with an ETA) when time alone ends the run;
        over the steps otherwise."""
        t = self.cfg.train
        if total is None:
            return tqdm(total=t.max_minutes, initial=self.train_time / 60, unit="min",
                        disable=disable, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:g} min [{elapsed}<{remaining}"
                                   "{postfix}]")
        return tqdm(total=total, initial=self.step, disable=disable, unit="step",
                    dynamic_ncols=True)

    def warn_overfit(self, total, step_seconds, echo):
        """Warn when the run will read its text more than OVERFIT_EPOCHS times with neither
        dropout nor weight drop: a net that size memorizes it, and validation loss climbs.

        `total`: the run's last step, or None when a time budget ends it; then the warning waits
        for `step_seconds`, the measured time of a step, to estimate the steps."""
        m, t = self.cfg.model, self.cfg.train
        if m.dropout or m.weight_drop or not self.is_main:
            return
        if total is None:
            if step_seconds is None:
                return
            total = self.step + (60 * t.max_minutes - self.train_time) / step_seconds
        epochs = total / self.batches.num_batches
        if epochs > OVERFIT_EPOCHS:
            echo(f"warning: this run will read its {len(self.train_tokens):,}-character training "
                 f"text about {epochs:,.0f} times (epochs) with no dropout, and will overfit it "
                 "(validation loss rising while train loss falls); add --set model.dropout=0.2, "
                 "train for less, or let charlstm choose for your text: --minutes N")

    def minute_mark(self, dt):
        """True when this step's time crossed a multiple of train.eval_minutes."""
        every = self.cfg.train.eval_minutes
        if not every:
            return False
        return (self.train_time // (60 * every)) > ((self.train_time - dt) // (60 * every))

    def stop_for_signal(self, echo):
        name = signal.Signals(self.stop_signal).name
        state = self.full_state()
        if self.is_main:
            self.save(self.out / "last.npz", state)
        raise Interrupted(self.stop_signal, f"{name} received: stopped after step {self.step} and "
                          f"saved {self.out / 'last.npz'}; resume with:  charlstm train --resume "
                          f"{self.out}")

    def train_step(self):
        """One window: forward, backward, clip, AdamW; advances the data position.

        A step whose loss or gradient is not finite, or whose loss is far above ln V or explodes
        (train.explode_ratio), changes no weights: it stops the run, or with on_divergence=skip
        is skipped and halves the learning rate.
        """
        cfg = self.cfg
        if self.window >= self.batches.num_batches:            # epoch boundary: reset the state
            self.epoch, self.window = self.epoch + 1, 0
            self.state = self.zero_state()
        # the epoch's offsets follow from (seed, epoch) alone, so a resumed run draws the same
        x, y = self.batches.get(self.window, self.batches.offsets(self.epoch, cfg.train.seed))
        rows = (self.rows, len(x)) if self.comm else None
        with np.errstate(over="ignore", invalid="ignore"):     # judged below, not warned about
            loss, cache, state = model.forward(self.params, x[self.rows], y[self.rows],
                                               self.state, cfg.model.dropout, self.rng, rows=rows,
                                               weight_drop=cfg.model.weight_drop,
                                               dropout_mask=cfg.model.dropout_mask)
            model.backward(self.params, cache, self.grads)
            del cache
            if self.comm:                                      # the mean over the whole batch
                self.comm.average_(self.gflat)
                loss = self.comm.mean(loss)
            norm = optim.clip_grad_norm(self.gflat, cfg.optim.grad_clip)
        budget = 60 * cfg.train.max_minutes if cfg.train.max_minutes else None
        lr = self.lr_scale * optim.lr_at(self.step, cfg.optim, self.total_steps(),
                                         self.train_time / budget if budget else None)
        self.step += 1
        self.window += 1
        problem = self.divergence(loss, norm)
        if problem:
            self.on_divergence(problem, lr)
            return loss, lr, norm
        optim.adamw_step(self.flat, self.gflat, self.opt, lr, cfg.optim)
        if self.ema is not None:
            optim.ema_update(self.ema, self.flat, cfg.optim.ema, self.step, self.opt["scratch"])
        self.state = state
        self.smooth_loss = loss if self.smooth_loss is None else 0.95 * self.smooth_loss + 0.05 * loss
        self.loss_floor = min(self.loss_floor, self.smooth_loss)
        return loss, lr, norm

    def divergence(self, loss, norm):
        """Why this step's loss/gradient cannot be trusted, or None.

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
        V = len(self.vocab)
        bound = 3 * math.log(V) + 10
        if loss > bound:
            return (f"the loss {loss:.4g} is beyond any sane model's: above 3 ln V + 10 = "
                    f"{bound:.1f} (ln V = {math.log(V):.2f}: a uniform guess over {V} characters)")
        ratio = self.cfg.train.explode_ratio
        if ratio and math.isfinite(self.loss_floor) and loss > ratio * self.loss_floor:
            return (f"the loss {loss:.4f} exploded past {ratio} x its best running average "
                    f"{self.loss_floor:.4f} (train.explode_ratio)")
        return None

    def on_divergence(self, problem, lr):
        if self.cfg.train.on_divergence == "skip":
            self.lr_scale *= 0.5                  # every rank: they must stay in step
            if self.is_main:                      # rank 0 alone logs and reports
                self.log(step=self.step, skipped=problem, lr_scale=self.lr_scale)
                tqdm.write(f"step {self.step}: {problem}; step skipped, learning rate halved "
                           f"to {lr / 2:.3g}")
            return
        last = self.out / "last.npz"
        kept = (f"{last} and best.npz are untouched" if last.exists() else
                "no checkpoint had been written yet")
        raise Diverged(
            f"step {self.step}: {problem}; training stopped ({kept}). Lower optim.lr (now "
            f"{lr:.3g}) or optim.grad_clip, or set train.on_divergence=skip to skip such steps "
            "and halve the learning rate")

    def epoch_progress(self):
        return self.epoch + self.window / self.batches.num_batches

    def evaluate_and_save(self, echo):
        self.evaluated_at = self.step
        state = self.full_state()
        if not self.is_main:                     # rank 0 evaluates and writes for everyone
            return
        params = self.eval_params()
        val, _, _ = evaluate(params, self.val_tokens, start=state)
        improved = val < self.best_val
        self.best_val = min(self.best_val, val)
        self.log(step=self.step, epoch=round(self.epoch_progress(), 4), val_loss=val,
                 val_bpc=bpc(val), train_time=round(self.train_time, 3))
        echo(f"step {self.step} (epoch {self.epoch_progress():.2f}): val loss {val:.4f} "
             f"nats/char, {bpc(val):.4f} bits/char" + (" (best)" if improved else ""))
        if improved:
            self.save(self.out / "best.npz", state)
        self.save(self.out / "last.npz", state)
        runfolder.keep_step_checkpoint(self.out, self.step, self.cfg.train.keep_last)
        if self.cfg.train.sample_length > 0:
            from .sample import generate
            text = "".join(generate(params, self.vocab, length=self.cfg.train.sample_length,
                                    rng=np.random.default_rng(self.step), temperature=0.8,
                                    start=state))
            echo("--- sample ---\n" + text + "\n--------------")

    # --- files ----------------------------------------------------------------------------

    def full_state(self):
        """The carried (h, c) of the whole batch: gathered from every rank (on rank 0)."""
        if not self.comm:
            return self.state
        h, c = (self.comm.gather_rows(s, axis=1) for s in self.state)
        return (h, c) if self.is_main else None

    def eval_params(self):
        """The weights evaluation, checkpoints and samples use: the average with optim.ema."""
        if self.ema is None:
            return self.params
        return model.views(self.ema, model.shapes_of(self.params))

    def save(self, path, state=None):
        """A checkpoint of the run (runstate.py); `state`: the whole batch's, under MPI."""
        shapes = model.shapes_of(self.params)
        runstate.save(path, runstate.RunState(
            self.cfg, self.vocab, weights=self.params,
            average=None if self.ema is None else self.eval_params(),
            moments=tuple(model.views(self.opt[key], shapes) for key in "mv"),
            state=state if state is not None else self.state, position=self.position(),
            init_from=self.init_from, stream=self.stream))

    def log(self, **record):
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


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
        tqdm.write(f"{signal.Signals(signum).name}: stopping after this step (again to quit now)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _quiet(*_):
    pass
