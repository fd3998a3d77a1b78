"""Rerun the whole recipe study, one step after another, resuming where it stopped.

The steps: build the corpora, train the fit corpora's grids and tiny-shakespeare's targets, fit
the law, judge the recipe on the held-out corpora, try the edges, print the tables, one run at a
time. Each step's script skips what its records hold, so a stopped rerun goes on where it
stopped.

    python benchmarks/rerun.py --list                 # the steps, and the runs each has left
    python benchmarks/rerun.py                        # run them (days: each run is timed)
    python benchmarks/rerun.py --records ~/study2     # a fresh study, recorded in ~/study2
    python benchmarks/rerun.py --from fit             # from one step on

The committed records (benchmarks/study/*.jsonl) are the study RESULTS.md reports: run with them,
the script only runs what is missing. `--records DIR` starts from empty records in DIR (and
trains under DIR/runs), so a second machine can repeat the study and compare its law and tables
with RESULTS.md's. Runs are timed by wall clock: run nothing else heavy beside it; `touch
RECORDS/PAUSE` makes it wait before the next run. The judging uses this checkout's charlstm
(heldout.py --code judges another commit). The corpora's Debian packages: `python
benchmarks/corpora.py --install` (as root) first.
"""

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, what it does, the script and its arguments, the arguments that list what is left)
STEPS = [
    ("corpora", "build the fit and held-out corpora", ["corpora.py"], None),
    ("grids", "the fit corpora's grids at 2 and 10 minutes, with char-rnn's defaults",
     ["study.py", "--kinds", "grid,default"], ["--list"]),
    ("heldout-code", "pycode-50m's runs measured on Python it never read",
     ["study.py", "--heldout"], None),
    ("targets", "tiny-shakespeare's configs against --minutes, 3 runs each, and the built-in "
     "corpus", ["targets.py", "--pairs", "builtin,shakespeare-10,shakespeare-30", "--repeat",
                "3"], None),
    ("fit", "the loss law fitted to those runs (compare with charlstm/recipe.py's LAW)",
     ["fit.py", "--until", date.today().isoformat()], None),
    ("judge", "the recipe on every held-out corpus at 2 and 10 minutes, with its neighbours",
     ["heldout.py", "--label", "v2"], ["--list"]),
    ("edges", "--dry-run's choices at the edges of the inputs", ["extremes.py"], None),
    ("tables", "the held-out and timing tables", ["heldout.py", "--table"], None),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--list", action="store_true", help="the steps and what each has left")
    ap.add_argument("--records", type=Path, default=None,
                    help="record into this folder instead of benchmarks/study (a fresh study)")
    ap.add_argument("--from", dest="start", default=STEPS[0][0],
                    choices=[name for name, *_ in STEPS], help="start at this step")
    a = ap.parse_args(argv)
    env = dict(os.environ)
    if a.records is not None:
        try:
            a.records.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"--records {a.records}: cannot make that folder ({e.strerror}); "
                             "give a folder path") from None
        env["CHARLSTM_STUDY_RECORDS"] = str(a.records.resolve())
    first = [name for name, *_ in STEPS].index(a.start)
    for i, (name, what, script, listing) in enumerate(STEPS[first:], first + 1):
        cmd = [sys.executable, str(HERE / script[0]), *script[1:]]
        print(f"[{i}/{len(STEPS)}] {name}: {what}\n    python benchmarks/{' '.join(script)}",
              flush=True)
        if a.list and listing is None:
            continue
        code = subprocess.run(cmd + (listing if a.list else []), env=env,
                              cwd=HERE.parent).returncode
        if code:
            raise SystemExit(f"step {name} stopped (exit status {code}); after fixing what it "
                             f"said, go on with: python benchmarks/rerun.py --from {name}"
                             + (f" --records {a.records}" if a.records is not None else ""))


if __name__ == "__main__":
    main()
