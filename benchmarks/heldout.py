"""Judge the recipe (`charlstm train --minutes N`) on corpora that no rule or fit of it has seen
(corpora.py's JUDGES: cjk-man, french-man, c-headers, cjk-docs, german-man, russian-man, perl-lib,
polish-man, go-src, spanish-man, tcl-lib), one run at a time.

    python benchmarks/corpora.py                   # build them first (every corpus)
    python benchmarks/heldout.py                   # every trial not yet recorded (2, then 10 min)
    python benchmarks/heldout.py --budgets 2 --list
    python benchmarks/heldout.py --budgets 10 --corpora perl-lib --neighbours d+0.1  # one of them
    python benchmarks/heldout.py --budgets 2 --corpora perl-lib --again v2:d+0.1   # seed 2 of it
    python benchmarks/heldout.py --budgets 2 --corpora cjk-man --label dec5 --neighbours "" \
        --nets 1x96                                # the choice and one other net, one sitting
    python benchmarks/heldout.py --budgets 2 --corpora cjk-man --label dec5 \
        --again dec5,dec5:1x96 --seed 3            # both again with seed 3
    python benchmarks/heldout.py --table           # RESULTS.md's held-out and timing tables
    git worktree add /tmp/charlstm-v1 COMMIT && python benchmarks/heldout.py --code /tmp/charlstm-v1
                                                   # judge that commit's charlstm, not this one's

For each corpus and budget, in this order:
1. recipe: `charlstm train --data TEXT --minutes N`; its config.yaml is what it chose.
2. the choice's neighbours, each its config.yaml with one change (and its own plan):
   width x0.7 and x1.4 (to a multiple of 32), one layer more, dropout -0.1 and +0.1;
3. default: today's defaults for the same minutes (train.recipe off);
4. the two best of 1-2 again with train.seed 2, to show the spread.
`--nets` adds other nets (LxH, LxH-dD with a dropout, or LxH-r: the recipe with that net, the
rest chosen for it) to a label's runs; a label of
SITTINGS is judged only against its own runs, made in one sitting, as the targets ask.

Each record keeps the commit of the charlstm that ran it (--code: a checkout of the version
to judge, so that editing this one does not change a study in progress). Every run of a corpus
uses the same validation split (the recipe's own rule: a tenth of the text,
at most 250,000 characters). Each record also keeps the steps the recipe predicted (its report),
the steps the run planned at its warmup's end (its "planned:" line), those it planned again a
minute in (its "planned again" line) and the steps it made: the timing table. Results go to study/judge.jsonl, a line per finished run; a run already there is
skipped, so the script resumes where it stopped. `touch benchmarks/study/PAUSE` makes it wait
before the next run. Run nothing else heavy beside it. Each record keeps its text's fingerprint
(corpora.fingerprint); a grid whose runs read another text than this machine builds is not
continued here, nor one whose runs all predate fingerprints (french-man's: its text cannot be
checked; on the machine of 2026-12-05 it rebuilt with 606 symbols, not 744).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import corpora
import study

HERE = study.HERE
JUDGED = study.RECORDS / "judge.jsonl"
BUDGETS = (2, 10)
WIDTH_STEP = 32
CODE = HERE.parent                 # the charlstm checkout whose `python -m charlstm` runs (--code)


def val_fraction(path):
    n = len(path.read_text("utf-8"))
    return round(min(0.1, 250_000 / n), 6)


NEIGHBOURS = ("w0.7", "w1.4", "L+1", "d-0.1", "d+0.1")    # d-0.1 only where there is dropout


def neighbours(chosen):
    """{name: --set overrides} of the recipe's choice's neighbours (NEIGHBOURS), from its
    config.yaml."""
    m = yaml.safe_load(chosen)["model"]
    L, H, d = m["num_layers"], m["hidden_size"], m["dropout"]
    snap = lambda w: max(WIDTH_STEP, int(round(w / WIDTH_STEP)) * WIDTH_STEP)
    out = {"w0.7": {"model.hidden_size": snap(0.7 * H)},
           "w1.4": {"model.hidden_size": snap(1.4 * H)},
           "L+1": {"model.num_layers": L + 1}}
    if d >= 0.1 - 1e-9:
        out["d-0.1"] = {"model.dropout": round(d - 0.1, 3)}
    out["d+0.1"] = {"model.dropout": round(d + 0.1, 3)}
    return out


def commit(code):
    """The checkout's commit, with "+" if its charlstm/ differs from it."""
    git = lambda *a: subprocess.run(["git", "-C", str(code), *a], capture_output=True,
                                    text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain",
                                                             "charlstm") else "")


def _read():
    return study.read_records(JUDGED)


def folder(corpus, budget, name):
    return study.RUNS / f"judge-{corpus}-{budget}m-{name}"


def run(corpus, budget, name, args, val, text_id):
    out = folder(corpus, budget, name)
    shutil.rmtree(out, ignore_errors=True)             # a run cut short starts again
    while study.PAUSE.exists():
        time.sleep(5)
    cmd = [sys.executable, "-m", "charlstm", "train", *args, "--out", str(out), "--no-progress",
           "--set", f"data.val_fraction={val}", "--set", "train.sample_length=0"]
    env = dict(os.environ, PYTHONPATH=str(CODE))
    tic = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=CODE)  # -m: cwd first
    wall = time.time() - tic
    if proc.returncode != 0:
        raise SystemExit(f"{corpus} {budget}m {name} failed:\n{proc.stderr[-2000:]}")
    record = {"corpus": corpus, "budget": budget, "name": name, "args": args,
              **study.summarize(out), "wall_s": round(wall), **plans(proc.stdout + proc.stderr),
              "chosen": (out / "config.yaml").read_text(),
              "report": proc.stdout.partition("run folder:")[0] if "--minutes" in args else "",
              "date": time.strftime("%Y-%m-%d %H:%M"), "code": commit(CODE),
              "text": text_id}
    with open(JUDGED, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{corpus} {budget}m {name}: best val {record['best_val']:.4f} in {record['steps']} "
          f"steps (predicted {record['predicted_steps']}, planned {record['planned_steps']}), "
          f"{wall:.0f} s", flush=True)
    return record


def plans(said):
    """The steps a run's output says were predicted (the recipe's report), planned at the
    warmup's end and planned again later (None where it says nothing)."""
    found = {"predicted_steps": r"([\d,]+) steps read",
             "planned_steps": r"planned: ([\d,]+) steps",
             "replanned_steps": r"planned again after \d+ s: ([\d,]+) steps"}
    return {key: int(m[1].replace(",", "")) if (m := re.search(pattern, said)) else None
            for key, pattern in found.items()}


def parse_net(spec):
    """{--set key: value} of a net named as LxH, LxH-dD (1x96, 1x576-d0.2) or LxH-r (the recipe
    with that net, choosing the rest for it: 1x768-r)."""
    m = re.fullmatch(r"(\d+)x(\d+)(?:-d(0|0?\.\d+)|(-r))?", spec)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise SystemExit(f"--nets: {spec!r} is not a net: give layers x width, e.g. 1x96, "
                         "1x576-d0.2 or 1x768-r")
    out = {"model.num_layers": int(m[1]), "model.hidden_size": int(m[2])}
    if m[3] is not None:
        out["model.dropout"] = float(m[3])
    return out


def judge(corpus, budget, label="recipe", listing=False, again=(), which=None, nets=(), seed=2):
    """Every run of one corpus and budget not yet recorded, in the order of the docstring.
    `label` names the recipe's run (another version of the recipe gets its own label, and its
    neighbours "label:w0.7", ...; a neighbour whose net already ran on this pair is not run
    again). `again`: only these recorded runs, with train.seed `seed` (the recipe's: `label`).
    `which`: only the recipe and these neighbours ("d+0.1", ...), no defaults or second seeds.
    `nets`: other nets ("1x96") run as the choice with that net, named "label:1x96". `seed`: the
    seed of `again`'s runs, named "-s<seed>"."""
    path = corpora.build(corpus)
    val = val_fraction(path)
    done = {r["name"]: r for r in _read() if (r["corpus"], r["budget"]) == (corpus, budget)}
    text = corpora.fingerprint(path)
    # A run recorded before fingerprints read the text of the pair's fingerprinted runs (they
    # were continued on it); a pair with none of those cannot be checked against this text
    known = {r["text"] for r in done.values() if r.get("text")}
    other = sorted(known - {text})
    refusal = None                                 # runs on two texts are not one grid
    if other:
        refusal = (f"{corpus} at {budget} min: its recorded runs read text {other[0]}, this "
                   f"machine builds {text} ({path}): rebuild that text, or judge it on a machine "
                   "that builds it")
    elif done and not known:
        refusal = (f"{corpus} at {budget} min: its recorded runs predate text fingerprints, so "
                   f"this machine's text ({text}) cannot be checked against theirs: judge it in "
                   "a fresh study (benchmarks/rerun.py --records DIR)")

    def once(name, args):
        if name in done:
            return done[name]
        if listing:
            print(corpus, budget, name, *args)
            return None
        if refusal:
            raise SystemExit(refusal)
        done[name] = run(corpus, budget, name, args, val, text)
        return done[name]

    recipe = once(label, ["--data", str(path), "--minutes", str(budget)])
    if recipe is None:
        return
    chosen = folder(corpus, budget, label) / "config.yaml"
    if not chosen.exists() and not listing:             # its folder is gone: rebuild from record
        chosen.parent.mkdir(parents=True, exist_ok=True)
        chosen.write_text(recipe["chosen"])
    replan = ["--set", "train.max_steps=null", "--set", "optim.hold_steps=0"]
    if "replan_step" in yaml.safe_load(recipe["chosen"])["optim"]:     # a second plan, void too
        replan += ["--set", "optim.replan_step=0", "--set", "optim.replan_total=0"]
    ran = {_net(r) for r in done.values()}
    if again:
        for name in again:
            if name not in done:
                raise SystemExit(f"{corpus} at {budget} min has no run named {name!r}")
            once(f"{name}-s{seed}", _args_of(done[name], corpus, budget, label, replan)
                 + ["--set", f"train.seed={seed}"])
        return None
    for name, changes in neighbours(recipe["chosen"]).items():
        if which is not None and name not in which:
            continue
        model = {**yaml.safe_load(recipe["chosen"])["model"],
                 **{k.split(".")[1]: v for k, v in changes.items()}}
        if label == "recipe" or _net_of(model) not in ran:
            once(name if label == "recipe" else f"{label}:{name}",
                 [str(chosen), *replan,
                  *[a for k, v in changes.items() for a in ("--set", f"{k}={v}")]])
    for spec in nets:
        changes = [a for k, v in parse_net(spec).items() for a in ("--set", f"{k}={v}")]
        once(f"{label}:{spec}", ["--data", str(path), "--minutes", str(budget), *changes]
             if spec.endswith("-r") else [str(chosen), *replan, *changes])
    if which is not None:
        return None
    once("default", ["--data", str(path), "--set", "train.recipe=off",
                     "--set", f"train.max_minutes={budget}", "--set", "train.eval_every=1000000000",
                     "--set", f"train.eval_minutes={budget / 4}"])
    ranked = sorted((r for n, r in done.items() if n != "default" and not n.endswith("-s2")),
                    key=lambda r: r["best_val"])
    for r in ranked[:2]:
        once(r["name"] + "-s2", _args_of(r, corpus, budget, label, replan)
             + ["--set", "train.seed=2"])


def _args_of(r, corpus, budget, label, replan):
    """The arguments that run record `r` again: a recipe's run (`--minutes`) is its choice, not
    a new timing."""
    if r["name"] in ("recipe", label) or "--minutes" in r.get("args", ()):
        return [str(folder(corpus, budget, r["name"]) / "config.yaml"), *replan]
    if "args" not in r:
        raise SystemExit(f"{JUDGED}: the record of {corpus} at {budget} min {r['name']} keeps "
                         "no args, so it cannot be run again")
    return list(r["args"])


def _net_of(m):
    heavy = "-heavy" if m["weight_drop"] else ""
    return f"{m['num_layers']}x{m['hidden_size']}-d{m['dropout']:g}{heavy}"


def _net(r):
    return _net_of(yaml.safe_load(r["chosen"])["model"])


LABELS = {"recipe": "rules (before the law)", "v2": "the loss law"}
# Labels judged only against their own runs (their neighbours, nets and seeds: one sitting).
SITTINGS = {"dec5": "the loss law, one sitting", "dec5w": "the loss law, one sitting",
            "dec6": "the loss law, one sitting, another machine's text"}
SEEDED = re.compile(r"-s\d+$")


def table():
    rows = _read()
    print("| corpus | budget | recipe | its choice (seeds) | best other run (seeds) | recipe - best "
          "| defaults |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for corpus in corpora.JUDGES:
        for budget in BUDGETS:
            mine = {r["name"]: r for r in rows if (r["corpus"], r["budget"]) == (corpus, budget)}
            losses = {n: [r["best_val"] for k, r in mine.items() if SEEDED.sub("", k) == n]
                      for n in mine if not SEEDED.search(n) and n != "default"}
            mean = {n: float(np.mean(v)) for n, v in losses.items()}
            cell = lambda n: (f"{n}: {_net(mine[n])} {mean[n]:.4f}" + (
                f" ({', '.join(f'{v:.4f}' for v in losses[n])})" if len(losses[n]) > 1 else ""))
            default = f"{mine['default']['best_val']:.4f}" if "default" in mine else "-"
            for label, what in {**LABELS, **SITTINGS}.items():
                if label not in mine:
                    continue
                others = [n for n in mean if n != label
                          and (label not in SITTINGS or n.startswith(label + ":"))]
                if not others:
                    continue
                best = min(others, key=mean.get)
                print(f"| {corpus} | {budget} min | {what} | {cell(label)} | {cell(best)} | "
                      f"{mean[label] - mean[best]:+.4f} | {default} |")
    print()
    print("| corpus | budget | run | code | predicted by the recipe | planned at the warmup's "
          "end | planned again | made | error of the last plan |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    errors = []
    for r in rows:
        plan = r.get("replanned_steps") or r.get("planned_steps")
        err = (r["steps"] - plan) / plan if plan else None
        if err is not None:
            errors.append(abs(err))
        cells = []
        for key in ("predicted_steps", "planned_steps", "replanned_steps"):
            v = r.get(key)
            cells.append(f"{v:,} ({(r['steps'] - v) / v:+.1%})" if v else "-")
        print(f"| {r['corpus']} | {r['budget']} min | {r['name']} | {r.get('code', '-')} | "
              + " | ".join(cells) + f" | {r['steps']:,} | "
              + (f"{err:+.1%}" if err is not None else "-") + " |")
    if errors:
        print(f"\nlast plans: median error {np.median(errors):.1%}, largest {max(errors):.1%} "
              f"({len(errors)} runs)")
    print()
    predicted_table(rows)


PREDICTED = re.compile(r"predicted validation loss: ([\d.]+) for .*?the floor and scale of\s+"
                       r"([\w-]+)", re.S)


def predicted_table(rows):
    """The law's predicted validation loss of the recipe's choice (its report) against the run's,
    for each recipe run of the law (one seed): how far a new text's floor, borrowed from the fit
    corpus nearest in bz2 bits per character, is from the truth."""
    print("| corpus | budget | run | predicted (floor and scale of) | measured | predicted - "
          "measured |")
    print("| --- | --- | --- | --- | --- | --- |")
    errors = []
    for r in rows:
        m = PREDICTED.search(r.get("report", ""))
        if m is None or r["name"] not in ("v2", *SITTINGS):
            continue
        errors.append(float(m.group(1)) - r["best_val"])
        print(f"| {r['corpus']} | {r['budget']} min | {r['name']} | {m.group(1)} ({m.group(2)}) | "
              f"{r['best_val']:.3f} | {errors[-1]:+.2f} |")
    if errors:
        print(f"\npredicted - measured: median {np.median(errors):+.2f}, from {min(errors):+.2f} "
              f"to {max(errors):+.2f} ({len(errors)} runs)")


def main():
    global CODE
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--corpora", default=",".join(corpora.JUDGES),
                    type=study.comma_list(corpora.NAMES, "corpus"),
                    help="the corpora, comma-separated (default: the held-out ones, JUDGES)")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), type=study.budgets,
                    help="minutes, comma-separated (default 2,10)")
    ap.add_argument("--list", action="store_true", help="print the next runs to do")
    ap.add_argument("--table", action="store_true", help="print the results as tables")
    ap.add_argument("--code", type=Path, default=CODE,
                    help="the charlstm checkout to judge (default: this one)")
    ap.add_argument("--label", default="recipe",
                    help="the name of the recipe's runs (one per version judged)")
    ap.add_argument("--choice-only", action="store_true",
                    help="the recipe's run and its run with --seed, no neighbours")
    ap.add_argument("--again", default="",
                    help="only these recorded runs (comma-separated names) with train.seed --seed")
    ap.add_argument("--neighbours", default=None,
                    help="only the recipe and these neighbours (comma-separated: w0.7,d+0.1; "
                         "\"\" for none)")
    ap.add_argument("--nets", default="",
                    help="other nets beside the choice (comma-separated: 1x96,1x576-d0.2,1x768-r)")
    ap.add_argument("--seed", type=int, default=2,
                    help="the seed of --again's and --choice-only's runs (default 2)")
    a = ap.parse_args()
    which = None if a.neighbours is None else [n for n in a.neighbours.split(",") if n]
    nets = [n for n in a.nets.split(",") if n]
    for spec in nets:
        parse_net(spec)
    if a.seed < 2:
        raise SystemExit(f"--seed {a.seed}: give 2 or more (1337, the first seed, is each run's "
                         "own)")
    unknown = sorted(set(which or ()) - set(NEIGHBOURS))
    if unknown:
        raise SystemExit(f"--neighbours: no neighbour named {unknown[0]!r} "
                         f"(one of {', '.join(NEIGHBOURS)})")
    if not (a.code / "charlstm" / "__init__.py").is_file():
        ap.error(f"--code {a.code}: no charlstm checkout there; give one (git worktree add DIR "
                 "COMMIT)")
    CODE = a.code.resolve()
    study.records_folder(write=not a.table)
    if a.table:
        return table()
    for budget in a.budgets:
        for corpus in a.corpora:
            again = [a.label] if a.choice_only else [n for n in a.again.split(",") if n]
            judge(corpus, budget, a.label, a.list, again, which, nets, a.seed)


if __name__ == "__main__":
    os.chdir(HERE.parent)
    main()
