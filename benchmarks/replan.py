"""When should a time-budgeted run plan its step count again? Replays the second plan of every
study run from its logged step times, at a minute in (the old rule) and at a third of the budget
(charlstm.run.REPLAN_SHARE), and compares each with the steps the budget allowed.

    python benchmarks/replan.py            # reads the run folders under ~/.cache/charlstm-study/runs

A run logs its cumulative training time every 10 steps (metrics.jsonl), so its speed at every
moment is known. The steps a budget allowed: for a run that ended its planned steps before the
budget, the steps it made plus the unused seconds at the speed of its last tenth; runs stopped by
the budget itself are left out (how many steps they had left is not known). A plan replayed at
`s` seconds is what charlstm.run.Run.replan would have said there: the step then, plus the budget
left over the median step time since the first plan (step 50).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

import study

FIRST_PLAN = 50                  # the warmup's end, where the recipe's runs plan first


def logged(folder):
    """(budget seconds, steps, cumulative training seconds) of a run with a second plan, or
    None."""
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError, yaml.YAMLError):
        return None
    minutes = cfg.get("train", {}).get("max_minutes")
    timed = [(r["step"], r["train_time"]) for r in rows if "train_loss" in r]
    if not minutes or not cfg.get("optim", {}).get("replan_step") or len(timed) < 50:
        return None
    steps, seconds = (np.array(v, dtype=np.float64) for v in zip(*timed))
    return 60 * minutes, steps, seconds


def replay(budget, steps, seconds, at):
    """The total a second plan made at `at` seconds would have set (None: the run ended first)."""
    i = int(np.searchsorted(seconds, at))
    if i >= len(seconds):
        return None
    per_step = np.diff(seconds) / np.diff(steps)
    since = per_step[(steps[1:] > FIRST_PLAN) & (steps[1:] <= steps[i])]
    return steps[i] + (budget - seconds[i]) / np.median(since)


def main():
    argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split())).parse_args()
    runs = [r for r in map(logged, sorted(Path(study.RUNS).glob("*"))) if r is not None]
    if not runs:
        raise SystemExit(f"no run folder with a second plan under {study.RUNS}: run the study "
                         "first (benchmarks/heldout.py)")
    ratios, used = [], []
    errors = {"a minute in": [], "a third of the budget": []}
    for budget, steps, seconds in runs:
        per_step = np.diff(seconds) / np.diff(steps)
        t = seconds[1:]
        used.append(seconds[-1] / budget)
        parts = [per_step[(t > 5) & (t <= 60)], per_step[t > 180]]
        if all(len(p) for p in parts):
            ratios.append(np.median(parts[0]) / np.median(parts[1]))
        if seconds[-1] >= 0.999 * budget:
            continue
        allowed = steps[-1] + (budget - seconds[-1]) / np.median(per_step[-max(5, len(t) // 10):])
        for name, at in (("a minute in", 60), ("a third of the budget", max(60, budget / 3))):
            planned = replay(budget, steps, seconds, at)
            if planned is not None:
                errors[name].append(planned / allowed - 1)
    used = np.array(used)
    print(f"{len(runs)} runs with a second plan; budget used: median {np.median(used):.1%}, "
          f"under 95% {np.sum(used < 0.95)}, under 90% {np.sum(used < 0.9)}, least "
          f"{used.min():.1%}")
    if ratios:
        print(f"first minute's step time / after 3 minutes (runs longer than 3 minutes: "
              f"{len(ratios)}): median {np.median(ratios):.3f}, quartiles "
              f"{np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f}")
    print("\n| second plan made | runs | median error | mean absolute error | largest | "
          "over 10% short | over 10% long |\n| --- | --- | --- | --- | --- | --- | --- |")
    for name, e in errors.items():
        if not e:
            continue
        e = np.array(e)
        print(f"| {name} | {len(e)} | {np.median(e):+.1%} | {np.mean(np.abs(e)):.1%} | "
              f"{e[np.argmax(np.abs(e))]:+.1%} | {np.sum(e < -0.1)} | {np.sum(e > 0.1)} |")


if __name__ == "__main__":
    main()
