"""Loss curves from runs' metrics.jsonl: train and validation loss against steps and training time.

    plot_runs(["runs/shakespeare", "runs/sh-dropout"], "curves.png")

matplotlib is an optional extra (`pip install 'charlstm[plot]'`); without it `plot_runs` raises a
CharlstmError that says how to install it. Several runs share the axes, one colour each. The train
loss is drawn twice: the logged losses as light dots, and through them the running average the
training progress bar shows.
"""

import math
import os
from pathlib import Path

from .errors import CharlstmError
from .runfolder import METRICS, metrics_records
from .step import SMOOTHING


def read_metrics(run_dir):
    """(train, val): lists of (step, minutes, loss) from a run folder's metrics.jsonl."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        raise CharlstmError(f"'{run_dir}' has no metrics.jsonl; pass a run folder written by "
                            "charlstm train")
    train, val, skipped = [], [], set()
    for _, m in metrics_records(run_dir):
        if not _is_number(m.get("step")):
            continue                                  # not a record charlstm wrote
        if "skipped" in m:                            # a diverged step, undone: the bar and
            skipped.add(m["step"])                    # the weights never saw its loss
        minutes = m.get("train_time", 0.0)
        minutes = minutes / 60 if _is_number(minutes) else math.nan
        for key, out in (("train_loss", train), ("val_loss", val)):
            if _is_number(m.get(key)) and not (key == "train_loss" and m["step"] in skipped):
                out.append((m["step"], minutes, m[key]))
    if not train and not val:
        raise CharlstmError(f"'{path}' holds no losses yet")
    return train, val


def plot_runs(run_dirs, out_path):
    """Draw every run's curves into one PNG at out_path: loss against steps and against minutes,
    nats per character on the left axis and bits per character on the right."""
    try:
        import matplotlib
        matplotlib.use("Agg")                         # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise CharlstmError("plotting needs matplotlib: pip install 'charlstm[plot]' "
                            "(or pip install matplotlib)") from None
    fmt = _format(out_path)
    runs = [(Path(d).name or str(d), *read_metrics(d)) for d in run_dirs]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for (name, train, val), colour in zip(runs, _colours(len(runs))):
        for ax, x in zip(axes, (0, 1)):
            if train:
                ax.plot([r[x] for r in train], [r[2] for r in train], color=colour, alpha=0.45,
                        linestyle="none", marker=".", markersize=3,
                        label=f"{name} train loss (logged steps)")
                ax.plot([r[x] for r in train], _smooth([r[0] for r in train],
                                                       [r[2] for r in train]),
                        color=colour, linewidth=1.4, label=f"{name} train, progress bar's average")
            if val:
                ax.plot([r[x] for r in val], [r[2] for r in val], color=colour, marker="o",
                        markersize=3, linestyle="--", linewidth=1.6, label=f"{name} val")
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("training minutes (evaluation excluded)")
    axes[0].set_ylabel("loss (nats/char)")
    right = axes[1].secondary_yaxis("right", functions=(lambda n: n / math.log(2),
                                                        lambda b: b * math.log(2)))
    right.set_ylabel("bits/char")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    # Through a temporary file: one stopped half-way (Ctrl-C, SIGTERM, a full disk) left a broken
    # image in place of the last good one. A link (-o /dev/stdout), device or pipe is written
    # through, as it is.
    out = Path(out_path)
    through = out.is_symlink() or (out.exists() and not out.is_file())
    target = out if through else out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        # The format named, never guessed: without one matplotlib would write NAME.png instead
        fig.savefig(target, dpi=110, format=fmt)
        if target != out:
            os.replace(target, out)
    except OSError as e:
        raise CharlstmError(f"cannot write '{out_path}': {e.strerror or e}") from None
    except RuntimeError as e:                     # a tool the format needs (.pgf: LaTeX) is missing
        raise CharlstmError(f"cannot write '{out_path}': {' '.join(str(e).split())}; name a "
                            ".png, .pdf or .svg file instead") from None
    finally:
        plt.close(fig)
        if target != out:
            target.unlink(missing_ok=True)
    return out_path


def _format(out_path):
    """The image format a file name asks for by its suffix (png without one), if matplotlib
    writes it; else one clear line."""
    from matplotlib.backend_bases import FigureCanvasBase
    fmt = Path(out_path).suffix[1:].lower() or "png"
    kinds = FigureCanvasBase.get_supported_filetypes()
    if fmt not in kinds:
        raise CharlstmError(f"cannot write '{out_path}': matplotlib writes no .{fmt} files; name "
                            f"a .png, .pdf or .svg file (or {', '.join(sorted(kinds))})")
    return fmt


# No step, minute or loss that training writes comes near this; a metrics file edited or damaged
# to hold values near 1e308 would overflow matplotlib's ticks.
LARGEST = 1e100


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= LARGEST  # no NaN


def _smooth(steps, losses, weight=1 - SMOOTHING):
    """The progress bar's running average of the train loss (step.smooth), at the logged steps.

    The bar averages every step's loss; the metrics hold every train.log_every-th loss only, so
    each logged loss stands in for the steps since the previous one: d steps apart, the average
    keeps weight**d of itself. Using the step differences holds for any log_every and across a
    resume. With log_every 1 this is the bar's value exactly; otherwise it is exact for a steady
    loss and close for a noisy one. It starts from the first loss, as the bar does: no bias
    towards zero.
    """
    out, avg, last = [], None, None
    for step, loss in zip(steps, losses):
        if avg is None:
            avg = loss
        else:
            w = weight ** max(step - last, 1)
            avg = w * avg + (1 - w) * loss
        last = step
        out.append(avg)
    return out


def _colours(n):
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
    return [palette[i % len(palette)] for i in range(n)]
