"""charlstm from Python: train a model as `charlstm train` does, and use a trained one.

    import charlstm
    result = charlstm.train(data="notes.txt", minutes=10)            # the recipe's model
    result = charlstm.train("configs/tiny.yaml", overrides={"train.max_steps": 100},
                            out="runs/tiny")
    print(result.best_val, result.best)                            # nats/char, runs/tiny/best.npz

    model = charlstm.Model.load("runs/tiny")                        # its best.npz
    model.generate(prime="ROMEO:", length=200, temperature=0.8, seed=1)
    model.score("To be, or not to be").bpc
    model.next("To be, or not to ", top=3)                          # [("b", 0.93), ...]

Every error a user can cause raises CharlstmError with the one-line message the command prints.
This module holds a run's policy (the default budget, the recipe's choice, the run folder's name);
run.py trains, sample.py and beam.py generate.
"""

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from . import backend, model as net, recipe, runfolder, runstate
from .cells import Cell
from .config import ARCHITECTURE, Config, config_to_dict, get, load_config_keys, replaced
from .distributed import together, world
from .errors import CharlstmError
from .run import Run
from .sample import generate, known

# Keys that say how long a run is: set any, and a run without a config keeps the defaults.
RUN_LENGTH = ("train.max_steps", "train.max_epochs", "train.max_minutes", "train.recipe")


@dataclass
class Result:
    """What a call to train() made. Under mpirun, ranks other than 0 get main=False."""
    config: Config                 # the resolved config the run trained with (or would, dry_run)
    run_dir: Path | None = None    # None after a dry run
    steps: int = 0
    best_val: float | None = None  # nats per character on the validation split
    main: bool = True

    @property
    def best(self):
        """The best checkpoint (lowest validation loss): what sample, eval and serve load."""
        return None if self.run_dir is None else self.run_dir / runfolder.BEST

    @property
    def last(self):
        return None if self.run_dir is None else self.run_dir / runfolder.LAST


def train(config=None, *, data=None, minutes=None, out=None, overrides=None, resume=None,
          init_from=None, device=None, dry_run=False, progress=False, echo=None):
    """Train a model; returns a Result.

    config: a YAML file (or a Config); data: the text to train on (a file, folder or glob:
    data.path); minutes: train this long with every setting not given chosen for the text and
    this machine (the recipe); out: the run folder (default runs/<config or data name>, with -2,
    -3, ... if that one holds a run); overrides: {"section.key": value} or ["section.key=value"],
    as --set; resume: a run folder to continue (its own config, plus overrides); init_from: a
    checkpoint to fine-tune (or a run folder: its best.npz); device: "cpu" or "cuda"; dry_run:
    resolve the config, train nothing; echo: where lines of progress go (print, click.echo;
    None: nowhere).
    """
    echo = _above_bars(echo) if echo else _quiet
    for name, value in (("data", data), ("out", out), ("resume", resume), ("init_from", init_from)):
        if isinstance(value, str) and not value.strip():    # "" is the current folder to Path
            raise CharlstmError(f"{name} is an empty path; give one (or None)")
    given = _as_sets(overrides)
    for option, value, key in (("--data", data, "data.path"), ("--minutes", minutes,
                                                                 "train.max_minutes"),
                               ("--device", device, "train.device")):
        if value is not None and any(s.split("=", 1)[0].strip() == key for s in given):
            raise CharlstmError(f"both {option} and --set {key} given; keep one")
    sets = (given + ([f"data.path={data}"] if data is not None else [])
            + ([f"train.device={device}"] if device else []))
    if resume is not None:
        if any(v is not None for v in (config, out, init_from, minutes)) or dry_run:
            raise CharlstmError("--resume takes the run's own config and folder; drop CONFIG, "
                                "--out, --init-from, --minutes and --dry-run (use --set to "
                                "change settings such as train.max_steps)")
        run = Run.resume(resume, sets, progress, echo)
        if run.is_main:
            echo(f"resuming '{resume}' at step {run.step}")
    else:
        comm = world()
        with together(comm):                # a file one rank lacks fails the run on every rank
            if init_from is not None:
                init_from = runfolder.checkpoint_in(init_from)
            cfg = plan(config, sets, minutes, init_from, progress, echo)
            if init_from is not None:
                cfg = _fine_tuned(cfg, sets, init_from, echo)
            if out is None and not dry_run:
                name = runfolder.run_name(None if isinstance(config, Config) else config, cfg)
                out = runfolder.free_folder(Path("runs") / name)
        if dry_run:
            return Result(cfg, main=comm is None or comm.rank == 0)
        run = Run.start(cfg, out, init_from, progress, echo)
        if run.is_main:
            echo(f"run folder: {out}" + (f" (fine-tuning from '{init_from}')" if init_from
                                         else ""))
    run.train(progress=progress, echo=echo)
    return Result(run.cfg, Path(run.out), run.step, run.best_val, run.is_main)


def plan(config, sets, minutes=None, init_from=None, progress=False, echo=None):
    """The config a new run trains with: the file (or Config) and `sets` ("key=value"); with
    `minutes`, or with neither a config nor a run length, the recipe's choice for the text."""
    echo = echo or _quiet
    if config is not None and not isinstance(config, (Config, str, os.PathLike)):
        raise CharlstmError(f"config must be a YAML file's path or a Config, not "
                            f"{type(config).__name__} {config!r:.40}")
    if minutes is not None:
        recipe.check_minutes(minutes)
        # recipe first, so that --set train.recipe=off (a plain run of N minutes) wins
        sets = ["train.recipe=auto"] + sets + [f"train.max_minutes={minutes!r}"]
    if isinstance(config, Config):
        cfg, explicit = load_config_keys(None, sets)
        cfg = replaced(config, {k: get(cfg, k) for k in explicit})
        explicit |= _explicit_of(config)
    else:
        cfg, explicit = load_config_keys(config, sets)
    if init_from and cfg.train.recipe == "auto":
        raise CharlstmError("--minutes (train.recipe: auto) chooses a new model, but "
                            f"--init-from '{init_from}' fixes it; set the training time "
                            "with --set train.max_minutes=N instead")
    notice = None
    if config is None and not init_from and not explicit & set(RUN_LENGTH):
        cfg = replaced(cfg, {"train.max_minutes": recipe.DEFAULT_MINUTES, "train.recipe": "auto"})
        notice = (f"no config and no run length: {recipe.DEFAULT_MINUTES} minutes of "
                  "training with settings chosen for the text (choose the time with "
                  "--minutes N, or fix the settings with a config file or --set "
                  "train.max_steps=N)")
    if cfg.train.recipe == "auto":
        cfg = recipe.resolve(cfg, explicit, progress, echo, notice)
    return cfg


def _fine_tuned(cfg, sets, init_from, echo):
    """`cfg` with the net of the checkpoint it fine-tunes (what Run.start trains, so that
    --dry-run shows it): a --set that would change that net is refused, not ignored, and a
    config file's other net is named in a line."""
    saved = runstate.inspect(init_from)[0]
    given, explicit = load_config_keys(None, sets)
    theirs = {key: get(saved, key) for key in ARCHITECTURE}
    refused = [f"--set {key}={get(given, key)}" for key in ARCHITECTURE
               if key in explicit and get(given, key) != theirs[key]]
    if refused:
        raise CharlstmError(
            f"--init-from '{init_from}' trains its own net ({_net(theirs)}), which "
            f"{' '.join(refused)} would change; drop {'it' if len(refused) == 1 else 'them'}, "
            "or train a new model without --init-from")
    differ = [key for key in ARCHITECTURE if get(cfg, key) != theirs[key]]
    if differ:
        echo(f"fine-tuning keeps the net of '{init_from}' ({_net(theirs)}), not the config's "
             + ", ".join(f"{key} {get(cfg, key)}" for key in differ))
    return replaced(cfg, theirs)


def _net(arch):
    """`2 x 512 lstm, embedding 64` (and its variants) from ARCHITECTURE's values."""
    variants = [v for v in ("peepholes", "coupled_gates") if arch[f"model.{v}"]]
    return (f"{arch['model.num_layers']} x {arch['model.hidden_size']} {arch['model.cell']}, "
            f"embedding {arch['model.embedding_size']}"
            + "".join(f", {v.replace('_', ' ')}" for v in variants))


def config_text(cfg):
    """A resolved config as the YAML `--dry-run` prints (a file `charlstm train` takes)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip()


def _as_sets(overrides):
    """{"section.key": value} or ["section.key=value", ...] as --set strings."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={_yaml_value(v)}" for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise CharlstmError(f"overrides must be a dict or a list of 'key=value' strings, not the "
                            f"string {overrides!r}")
    if not isinstance(overrides, Iterable):
        raise CharlstmError(f"overrides must be a dict or a list of 'key=value' strings, not "
                            f"{type(overrides).__name__} {overrides!r:.40}")
    return list(overrides)


def _yaml_value(v):
    return yaml.safe_dump(v, default_flow_style=True, width=10 ** 9).strip().removesuffix("...") \
        .strip()


def _explicit_of(cfg):
    """A Config passed in whole: every key differing from the defaults counts as the user's."""
    default = Config()
    return {f"{s}.{k}" for s, section in config_to_dict(cfg).items() for k, v in section.items()
            if v != get(default, f"{s}.{k}")}


def _quiet(*_):
    pass


def _above_bars(echo):
    """`echo` with the progress bars cleared while it writes and drawn again after (as
    tqdm.write does), so that a caller's print or click.echo does not tear them."""
    def say(*args, **kwargs):
        with tqdm.external_write_mode():
            echo(*args, **kwargs)
    return say


@dataclass
class Score:
    """How well a model predicts a text: every character, the first one after a newline (as the
    sampler starts) when the vocabulary has one."""
    loss: float              # mean surprisal, nats per character
    bpc: float               # bits per character
    chars: int               # characters scored
    surprisal: np.ndarray    # (len(text),) float64 nats per character; NaN where not scored
    guesses: list | None = None   # per character, the model's top [(char, p), ...] there


class Model:
    """A trained model: a checkpoint's weights, vocabulary, config and starting state."""

    def __init__(self, path, device="cpu"):
        self.path, self.device = Path(path), device
        params, self.vocab, self.config, self.meta, self.start = runstate.load_model(
            self.path, with_start=True)
        self.stamp = _stamp(self.path)
        if device != "cpu":
            backend.require(device)
            params = {k: backend.to_device(p, device) for k, p in params.items()}
        self.params = params

    @classmethod
    def load(cls, path, device="cpu"):
        """A checkpoint file, or a run folder (its best.npz, else its last.npz)."""
        return cls(runfolder.checkpoint_in(path), device)

    def reloaded(self):
        """This model, or the checkpoint file as it is now if training replaced it since (files
        are replaced whole, atomically, so a reload never reads a half-written one). A file
        removed or moved away since leaves this model as it is: it is whole in memory (a server
        answered every request with a 500 and a FileNotFoundError)."""
        try:
            stamp = _stamp(self.path)
        except FileNotFoundError:
            return self
        return self if stamp == self.stamp else Model(self.path, self.device)

    @property
    def info(self):
        m = self.config.model
        return {"cell": Cell.of_config(m).describe(), "layers": m.num_layers,
                "hidden": m.hidden_size, "vocab_size": len(self.vocab),
                "parameters": int(sum(p.size for p in self.params.values())),
                "steps": self.meta.get("step"), "best_val": _finite(self.meta.get("best_val_loss")),
                "path": str(self.path)}

    def stream(self, prime="", length=200, temperature=1.0, top_k=0, top_p=1.0, seed=None,
               argmax=False, beam=0, skip_unknown=False):
        """The continuation of `prime`, character by character (the prime not included); the
        same seed and options give the same text. beam=K: beam search's most likely
        continuation (temperature, top-k, top-p and seed do not apply)."""
        prime = known(self.vocab, prime, skip_unknown, "prime")
        if beam:
            from .beam import beam_search
            yield from beam_search(self.params, self.vocab, length, beam, prime, self.start)
            return
        yield from generate(self.params, self.vocab, length, _rng(seed), prime, temperature,
                            top_k, top_p, argmax, self.start)

    def generate(self, prime="", length=200, temperature=1.0, top_k=0, top_p=1.0, seed=None,
                 argmax=False, beam=0, skip_unknown=False):
        """The prime and its continuation, as `charlstm sample` prints them (see stream)."""
        prime = known(self.vocab, prime, skip_unknown, "prime")
        return prime + "".join(self.stream(prime, length, temperature, top_k, top_p, seed,
                                           argmax, beam))

    def score(self, text, top=0, skip_unknown=False):
        """Each character's surprisal (nats) given all before it; with top=N, the model's N
        likeliest characters at each place. skip_unknown: characters the model does not know
        are left out of its input and get NaN (no guesses)."""
        _check_top(top)
        kept = known(self.vocab, text, skip_unknown, "text")
        where = np.array([i for i, ch in enumerate(text) if ch in self.vocab.chars]
                         if len(kept) < len(text) else np.arange(len(text)), dtype=np.int64)
        newline = "\n" in self.vocab.chars
        probs, targets = self._probs(("\n" if newline else "") + kept)
        picked = probs[np.arange(len(targets)), targets].astype(np.float64)
        nats = -np.log(np.maximum(picked, 1e-300))
        scored = where[len(kept) - len(targets):]          # all, or all but the first
        surprisal = np.full(len(text), np.nan)
        surprisal[scored] = nats
        loss = float(nats.mean()) if len(nats) else math.nan
        guesses = None
        if top:
            guesses = [[] for _ in text]
            for i, row in zip(scored, probs):
                guesses[i] = self._top(row, top)
        return Score(loss, loss / math.log(2), len(picked), surprisal, guesses)

    def next(self, context="", top=10, skip_unknown=False):
        """The `top` likeliest next characters after `context`, with their probabilities."""
        _check_top(top)
        context = known(self.vocab, context, skip_unknown, "context")
        probs, _ = self._probs(("\n" if "\n" in self.vocab.chars else "") + context
                               or self.vocab.chars[0], last=True)
        return self._top(probs[-1], top)

    def _top(self, row, top):
        order = np.argsort(-row, kind="stable")[:top]
        return [(self.vocab.chars[i], float(row[i])) for i in order]

    def _probs(self, text, last=False, window=256):
        """Next-character probabilities (host float32) after each character of `text` but the
        last (or, `last`, after each one), and the targets: the characters predicted."""
        tokens = self.vocab.encode(text).astype(np.int64)
        x = tokens if last else tokens[:-1]
        y = np.append(tokens[1:], 0) if last else tokens[1:]
        V, E, H, L = net.dims(self.params)
        xp = backend.array_module(self.params["head.weight"])
        state = tuple(xp.asarray(s[:, :1]) for s in self.start) if self.start is not None \
            else net.init_state(L, 1, H, xp=xp)
        out = []
        for i in range(0, len(x), window):
            _, cache, state = net.forward(self.params, x[None, i:i + window], y[None, i:i + window],
                                          state)
            *_, probs, _ = cache                          # softmax probabilities (T, V)
            out.append(backend.to_host(probs))
        return (np.concatenate(out) if out else np.zeros((0, V), np.float32)), y


def _rng(seed):
    """The generator of `seed` (None: fresh entropy; `charlstm sample` passes its Generator), or
    one clear error rather than NumPy's ("expected non-negative integer")."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise CharlstmError(f"seed must be a whole number >= 0 or None, got {seed!r:.40}") \
            from None


def _check_top(top):
    """score's and next's `top`: a count (a negative one cut the list short by that many)."""
    if top is not None and (not isinstance(top, Integral) or top < 0):
        raise CharlstmError(f"top must be a whole number >= 0, got {top!r:.40}")


def _stamp(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
