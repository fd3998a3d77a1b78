"""charlstm from Python: train a model as `charlstm train` does, in one call.

    import charlstm
    result = charlstm.train(data="notes.txt", minutes=10)            # the recipe's model
    result = charlstm.train("configs/tiny.yaml", overrides={"train.max_steps": 100},
                            out="runs/tiny")
    print(result.best_val, result.best)                            # nats/char, runs/tiny/best.npz
    charlstm.train(resume="runs/tiny", overrides={"train.max_steps": 200})

Every error a user can cause raises CharlstmError with the one-line message the command prints.
This module holds a run's policy (the default budget, the recipe's choice, the run folder's name);
run.py trains.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

from . import recipe, runfolder
from .config import Config, config_to_dict, get, load_config_keys, replaced
from .errors import CharlstmError
from .run import Run

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
    checkpoint to fine-tune; device: "cpu" or "cuda"; dry_run: resolve the config, train
    nothing; echo: where lines of progress go (print, click.echo; None: nowhere).
    """
    echo = echo or _quiet
    sets = (_as_sets(overrides) + ([f"data.path={data}"] if data is not None else [])
            + ([f"train.device={device}"] if device else []))
    if resume is not None:
        if any(v is not None for v in (config, out, init_from, minutes)) or dry_run:
            raise CharlstmError("--resume takes the run's own config and folder; drop CONFIG, "
                                "--out, --init-from, --minutes and --dry-run (use --set to "
                                "change settings such as train.max_steps)")
        run = Run.resume(resume, sets, progress)
        if run.is_main:
            echo(f"resuming '{resume}' at step {run.step}")
    else:
        cfg = plan(config, sets, minutes, init_from, progress, echo)
        if dry_run:
            return Result(cfg)
        if out is None:
            name = runfolder.run_name(None if isinstance(config, Config) else config, cfg)
            out = runfolder.free_folder(Path("runs") / name)
        run = Run.start(cfg, out, init_from, progress)
        if run.is_main:
            echo(f"run folder: {out}" + (f" (fine-tuning from '{init_from}')" if init_from
                                         else ""))
    run.train(progress=progress)
    return Result(run.cfg, Path(run.out), run.step, run.best_val, run.is_main)


def plan(config, sets, minutes=None, init_from=None, progress=False, echo=None):
    """The config a new run trains with: the file (or Config) and `sets` ("key=value"); with
    `minutes`, or with neither a config nor a run length, the recipe's choice for the text."""
    echo = echo or _quiet
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
