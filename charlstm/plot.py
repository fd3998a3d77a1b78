"""Loss curves from runs' metrics.jsonl: train and validation loss against steps and training time.

    plot_runs(["runs/shakespeare", "runs/sh-dropout"], "curves.png")

matplotlib is an optional extra (`pip install 'charlstm[plot]'`); without it `plot_runs` raises a
CharlstmError that says how to install it. Several runs share the axes, one colour each.
"""

import json
import math
from pathlib import Path

from .errors import CharlstmError


def read_metrics(run_dir):
    """(train, val): lists of (step, minutes, loss) from a run folder's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise CharlstmError(f"'{run_dir}' has no metrics.jsonl; pass a run folder written by "
                            "charlstm train")
    train, val = [], []
    for line in path.read_text().splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue                                  # a line cut short by a killed run
        if not isinstance(m, dict) or not _is_number(m.get("step")):
            continue                                  # not a record charlstm wrote
        minutes = m.get("train_time", 0.0)
        minutes = minutes / 60 if _is_number(minutes) else math.nan
        for key, out in (("train_loss", train), ("val_loss", val)):
            if _is_number(m.get(key)):
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
    runs = [(Path(d).name or str(d), *read_metrics(d)) for d in run_dirs]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for (name, train, val), colour in zip(runs, _colours(len(runs))):
        for ax, x in zip(axes, (0, 1)):
            if train:
                ax.plot([r[x] for r in train], [r[2] for r in train], color=colour, alpha=0.15,
                        linewidth=0.6)
                ax.plot([r[x] for r in train], _smooth([r[2] for r in train]), color=colour,
                        alpha=0.6, linewidth=1.0, label=f"{name} train (smoothed)")
            if val:
                ax.plot([r[x] for r in val], [r[2] for r in val], color=colour, marker="o",
                        markersize=3, linewidth=1.6, label=f"{name} val")
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
    try:
        fig.savefig(out_path, dpi=110)
    except OSError as e:
        raise CharlstmError(f"cannot write '{out_path}': {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return out_path


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _smooth(values, weight=0.9):
    """Exponential moving average, as the progress bar shows: the trend through the noise."""
    out, avg = [], None
    for v in values:
        avg = v if avg is None else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


def _colours(n):
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
    return [palette[i % len(palette)] for i in range(n)]
