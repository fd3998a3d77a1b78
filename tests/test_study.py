"""The recipe study's scripts: benchmarks/fit.py recovers a law it is given, prices its picks on
a corpus left out of the fit, and never pools runs on two different texts under one corpus name;
benchmarks/heldout.py will not add runs to a grid whose runs read another text;
benchmarks/rerun.py runs every step, apart from the committed records when asked, and says where
to go on; benchmarks/corpora.py reads no other package's fortunes into the English ones and
writes no empty corpus."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
fit = pytest.importorskip("fit")
heldout = pytest.importorskip("heldout")
rerun = pytest.importorskip("rerun")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


TRUTH = {"A": 0.8, "k2": 1.1, "B": 60.0, "beta": 0.45, "m2": 1.5, "beta2": 0.5, "alpha": 0.15}
FLOOR = {"a": (1.2, 1.0), "b": (0.6, 4.0), "c": (0.9, 2.5)}         # E, s; the first s is 1


def law_points():
    """Points that TRUTH makes exactly: 3 corpora, 1 and 2 layers, 3 widths, 2 budgets."""
    rng = np.random.default_rng(0)
    points = []
    for corpus, (E, s) in FLOOR.items():
        for L in (1, 2):
            for H in (128, 256, 512):
                for budget, steps in ((2, 2_000), (10, 8_000)):
                    N = fit.lstm_params(L, H, 64)
                    D = steps * fit.B * fit.T * rng.uniform(0.8, 1.2)
                    loss = E + s * fit.bracket(TRUTH, L, N, D)
                    points.append({"corpus": corpus, "budget": budget, "L": L, "H": H, "N": N,
                                   "D": D, "U": 1e6, "heavy": False, "loss": float(loss)})
    return points


def test_the_fit_recovers_the_law_that_made_its_points():
    truth, floor, points = TRUTH, FLOOR, law_points()
    E, scale, law, res = fit.fit(points, truth["alpha"])
    assert np.sqrt(np.mean(res ** 2)) < 1e-5
    for k in truth:
        assert law[k] == pytest.approx(truth[k], rel=1e-3), k
    for corpus, (e, s) in floor.items():
        assert (E[corpus], scale[corpus]) == pytest.approx((e, s), rel=1e-3)


def test_the_left_out_regret_is_what_the_pick_loses_on_a_corpus_the_fit_never_saw():
    points = law_points()
    lost = {}
    fit.leave_one_out(points, TRUTH["alpha"], lost=lost)
    assert lost == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.0}, abs=1e-6)
    # on c at 10 minutes another net than the law's first does 0.05 better than the law's first
    pair = [p for p in points if (p["corpus"], p["budget"]) == ("c", 10)]
    first = min(pair, key=lambda p: p["loss"])
    other = next(p for p in pair if p is not first)
    other["loss"] = first["loss"] - 0.05
    lost = {}
    fit.leave_one_out(points, TRUTH["alpha"], lost=lost)
    assert lost["c"] == pytest.approx(0.05, abs=1e-6)
    assert lost["a"] == pytest.approx(0.0, abs=1e-6)


def test_the_held_out_records_rank_only_nets_the_recipe_could_choose(tmp_path, monkeypatch):
    def record(name, L, H, V, loss, dropout=0.0, steps=1000):
        model = {"num_layers": L, "hidden_size": H, "embedding_size": 64, "vocab_size": V,
                 "dropout": dropout, "weight_drop": 0.0}
        return json.dumps({"corpus": "x", "budget": 2, "name": name, "best_val": loss,
                           "steps": steps, "epochs": 0.5, "chosen": yaml.safe_dump(
                               {"model": model, "train": {"batch_size": 32, "seq_len": 50}})})
    (tmp_path / "judge.jsonl").write_text("\n".join([
        record("v2", 1, 192, 3000, 3.0), record("v2-s2", 1, 192, 3000, 3.2),
        record("v2:w0.7", 1, 128, 3000, 3.05), record("v2:d+0.1", 1, 192, 3000, 2.5, 0.1),
        record("default", 2, 128, 3000, 2.4), record("v2:L+1", 2, 192, 3000, 2.3),
        record("v2:1x96-s3", 1, 96, 3000, 3.3)]))
    monkeypatch.setattr(heldout, "JUDGED", tmp_path / "judge.jsonl")
    points = fit.judged_points()
    assert sorted((p["H"], round(p["loss"], 6), p["runs"]) for p in points) == \
        [(96, 3.3, 1), (128, 3.05, 1), (192, 3.1, 2)]
    assert points[0]["D"] == 1000 * 32 * 50 and points[0]["U"] == 2 * points[0]["D"]


def test_a_run_on_a_rebuilt_text_is_another_corpus():
    assert fit.on_text({"corpus": "pycode-50m"}) == "pycode-50m"
    assert fit.on_text({"corpus": "pycode-50m", "text": "0123456789abcdef"}) == \
        "pycode-50m@01234567"
    assert fit.on_text({"corpus": "russian-2m", "text": fit.FIRST_TEXTS["russian-2m"]}) == \
        "russian-2m"
    recorded = {r["corpus"] for r in fit.runs("2026-12-04")}
    assert "pycode-50m@other" in recorded and "pycode-50m" in recorded


def test_a_grid_on_another_text_is_not_continued(tmp_path, monkeypatch):
    text = tmp_path / "judge.txt"
    text.write_text("some text\n" * 1000)
    monkeypatch.setattr(heldout.corpora, "build", lambda name: text)
    monkeypatch.setattr(heldout, "run", lambda *a: pytest.fail("a run was started"))
    monkeypatch.setattr(heldout, "folder", lambda *a: tmp_path / "v2")   # not the user's study
    recorded = {"corpus": "judge", "budget": 2, "name": "default", "best_val": 1.0}
    monkeypatch.setattr(heldout, "_read", lambda: [dict(recorded, text="0" * 16)])
    with pytest.raises(SystemExit, match=r"judge at 2 min: its recorded runs read text 0{16}, "
                                         r"this machine builds [0-9a-f]{16}"):
        heldout.judge("judge", 2, "v2")
    monkeypatch.setattr(heldout, "_read", lambda: [dict(recorded,
                                                        text=heldout.corpora.fingerprint(text))])
    with pytest.raises(pytest.fail.Exception, match="a run was started"):
        heldout.judge("judge", 2, "v2")          # the same text: the grid goes on
    monkeypatch.setattr(heldout, "_read", lambda: [recorded])     # before fingerprints
    with pytest.raises(SystemExit, match=r"judge at 2 min: its recorded runs predate text "
                                         r"fingerprints, so this machine's text"):
        heldout.judge("judge", 2, "v2")
    monkeypatch.setattr(heldout, "_read", lambda: [recorded, dict(
        recorded, name="v2:w0.7", text=heldout.corpora.fingerprint(text))])
    with pytest.raises(pytest.fail.Exception, match="a run was started"):
        heldout.judge("judge", 2, "v2")          # a later run says which text the grid read


def test_an_unknown_neighbour_or_run_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["heldout.py", "--neighbours", "d+0.1,w2"])
    with pytest.raises(SystemExit, match=r"^--neighbours: no neighbour named 'w2' \(one of w0.7, "):
        heldout.main()
    text = tmp_path / "judge.txt"
    text.write_text("some text\n" * 1000)
    monkeypatch.setattr(heldout.corpora, "build", lambda name: text)
    monkeypatch.setattr(heldout, "run", lambda *a: pytest.fail("a run was started"))
    chosen = "model: {num_layers: 1, hidden_size: 64, dropout: 0.0, weight_drop: 0.0}\noptim: {}\n"
    monkeypatch.setattr(heldout, "_read", lambda: [
        {"corpus": "judge", "budget": 2, "name": "v2", "best_val": 1.0, "chosen": chosen,
         "text": heldout.corpora.fingerprint(text)}])
    monkeypatch.setattr(heldout, "folder", lambda *a: tmp_path / "v2")
    with pytest.raises(SystemExit, match=r"^judge at 2 min has no run named 'v2:d\+0.1'$"):
        heldout.judge("judge", 2, "v2", again=["v2:d+0.1"])


def test_other_nets_and_later_seeds_run_as_named_and_a_sitting_is_judged_alone(
        monkeypatch, tmp_path, capsys):
    text = tmp_path / "judge.txt"
    text.write_text("some text\n" * 1000)
    monkeypatch.setattr(heldout.corpora, "build", lambda name: text)
    chosen = "model: {num_layers: 1, hidden_size: 192, dropout: 0.0, weight_drop: 0.0}\noptim: {}\n"
    records = [{"corpus": "judge", "budget": 2, "name": "dec5", "best_val": 3.0, "chosen": chosen,
                "args": [], "steps": 1_000, "planned_steps": None, "code": "abc",
                "text": heldout.corpora.fingerprint(text)}]
    started = []

    def run(corpus, budget, name, args, val, text_id):
        started.append((name, args))
        net = {"model": {**yaml.safe_load(chosen)["model"],
                         **{a.split("=")[0].split(".")[1]: yaml.safe_load(a.split("=")[1])
                            for a in args if a.startswith("model.")}}}
        records.append({**records[0], "name": name, "args": args,
                        "best_val": 2.9 if "1x96" in name else 3.0, "chosen": yaml.dump(net)})
        return records[-1]

    monkeypatch.setattr(heldout, "run", run)
    monkeypatch.setattr(heldout, "_read", lambda: list(records))
    monkeypatch.setattr(heldout, "folder", lambda *a: tmp_path / "dec5")
    heldout.judge("judge", 2, "dec5", which=[], nets=["1x96-d0.1"])
    assert [n for n, _ in started] == ["dec5:1x96-d0.1"]
    assert {"model.num_layers=1", "model.hidden_size=96", "model.dropout=0.1"} <= set(started[0][1])
    heldout.judge("judge", 2, "dec5", again=["dec5", "dec5:1x96-d0.1"], seed=3)
    assert [n for n, _ in started[1:]] == ["dec5-s3", "dec5:1x96-d0.1-s3"]
    assert started[2][1][-2:] == ["--set", "train.seed=3"]
    records.append({**records[1], "name": "w0.7", "best_val": 1.0})   # another sitting's run
    monkeypatch.setattr(heldout.corpora, "JUDGES", ("judge",))
    heldout.table()
    row = next(line for line in capsys.readouterr().out.splitlines() if "one sitting" in line)
    assert "dec5:1x96-d0.1: 1x96-d0.1 2.9000 (2.9000, 2.9000)" in row and row.count("+0.1000")
    with pytest.raises(SystemExit, match=r"^--nets: '2x' is not a net: give layers x width"):
        heldout.parse_net("2x")


def test_a_fresh_study_records_every_script_apart(tmp_path):
    env = dict(os.environ, CHARLSTM_STUDY_RECORDS=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import study, heldout, targets, fit; print("
                          "study.RESULTS, study.HELDOUT, study.PAUSE, study.RUNS, heldout.JUDGED, "
                          "targets.RESULTS, fit.STUDY)"], env=env, cwd=BENCHMARKS,
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 7 and all(Path(p).parent == tmp_path or Path(p) == tmp_path for p in out)
    assert fit.runs("2099-12-31") and not subprocess.run(
        [sys.executable, "-c", "import fit; assert not fit.runs('2099-12-31')"], env=env,
        cwd=BENCHMARKS).returncode                # empty records: no runs, no error


def test_a_rerun_runs_each_step_in_order_and_says_where_to_go_on(tmp_path, monkeypatch):
    calls, failing = [], {3}                  # the third step run fails, once

    def fake(cmd, env, cwd):
        calls.append((Path(cmd[1]).name, env.get("CHARLSTM_STUDY_RECORDS")))
        return subprocess.CompletedProcess(cmd, 3 if len(calls) in failing else 0)
    monkeypatch.setattr(rerun.subprocess, "run", fake)
    with pytest.raises(SystemExit, match=r"^step heldout-code stopped \(exit status 3\); after "
                       r"fixing what it said, go on with: python benchmarks/rerun.py --from "
                       r"heldout-code --records "):
        rerun.main(["--records", str(tmp_path / "fresh")])
    assert calls == [(s, str(tmp_path / "fresh")) for s in ("corpora.py", "study.py", "study.py")]
    calls.clear()
    failing.clear()
    rerun.main(["--from", "fit"])
    assert [c[0] for c in calls] == ["fit.py", "heldout.py", "extremes.py", "heldout.py"]
    assert all(records is None or records == os.environ.get("CHARLSTM_STUDY_RECORDS")
               for _, records in calls)
    assert all((BENCHMARKS / script[0]).exists() for _, _, script, _ in rerun.STEPS)


def test_a_rerun_into_a_folder_it_cannot_make_says_so_in_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit, match=r"^--records .*file/x: cannot make that folder \(Not a "
                                         r"directory\); give a folder path$"):
        rerun.main(["--records", str(tmp_path / "file" / "x"), "--list"])


def test_the_english_fortunes_leave_out_the_chinese_ones_and_an_empty_text_stops(tmp_path,
                                                                                monkeypatch):
    """fortunes-zh installs its files beside the English fortunes; fortunes-100k and fortunes-1m
    must not read them (they changed fortunes-100k's text), and a corpus whose files give no
    text stops instead of being written empty."""
    corpora = heldout.corpora
    folder = tmp_path / "fortunes"
    folder.mkdir()
    art, zippy = "art\n%\n" * 10_000, "yow\n%\n" * 10_000     # 120,000 characters
    (folder / "art").write_text(art, "utf-8")
    (folder / "chinese").write_text("\u4e2d\u6587\n%\n" * 30, "utf-8")
    (folder / "chinese.dat").write_bytes(b"\0")
    (folder / "zippy").write_text(zippy, "utf-8")
    monkeypatch.setattr(corpora, "FORTUNES", folder)
    first, rest = corpora.fortunes_en(), corpora.fortunes_1m()
    assert len(first) == 100_000 and first + rest == art + zippy    # after fortunes-100k's text
    for name in ("art", "zippy"):
        (folder / name).write_text("", "utf-8")
    with pytest.raises(SystemExit, match="fortunes-100k: its files gave no text"):
        corpora.build("fortunes-100k", out=tmp_path / "built")
    assert not list((tmp_path / "built").glob("*"))


def test_the_study_table_has_a_row_for_a_corpus_outside_the_fit_corpora(tmp_path, monkeypatch,
                                                                        capsys):
    """cjk-docs has a grid in study.GRID but is no fit corpus: `study.py --table` stopped on it
    (ValueError: 'cjk-docs' is not in list), with the committed records too."""
    study = heldout.study
    run = {"corpus": "cjk-docs", "budget": 2, "kind": "grid", "name": "1x64", "best_val": 3.0,
           "steps": 1_000, "epochs": 1.0, "chars_per_sec": 1_000, "date": "2026-12-01 10:00",
           "settings": {}, "eval": "carried"}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(dict(run, corpus=c)) + "\n" for c in
                                                    ("some-text", "cjk-docs", "fortunes-100k")))
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results.jsonl")
    monkeypatch.setattr(study, "HELDOUT", tmp_path / "heldout.jsonl")
    study.table()
    rows = [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()
            if " | 2 min | " in line]
    assert rows == ["| fortunes-100k", "| cjk-docs", "| some-text"] * 2


RESULT = {"corpus": "russian-2m", "budget": 2, "kind": "grid", "name": "2x128", "best_val": 1.5,
          "steps": 1_000, "epochs": 1.0, "chars_per_sec": 1_000, "date": "2026-12-01 10:00",
          "settings": {}, "eval": "carried"}


@pytest.mark.parametrize("name, line, said", [
    ("results.jsonl", json.dumps(RESULT)[:50], r"line 2 is not JSON \(Unterminated string "
                                               r"starting at column 47\)"),
    ("judge.jsonl", "<<<<<<< HEAD", r"line 2 is not JSON \(Expecting value at column 1"),
    ("heldout.jsonl", "[1, 2]", r"line 2 is not a record \(a JSON list, not an object\)"),
    ("targets.jsonl", '{"step": 10, "train_loss": 2.3}', "line 2 has no 'pair': not a record of "
                                                        "targets.jsonl"),
    ("results.jsonl", json.dumps(dict(RESULT, budget="2")), "line 2: 'budget' is \"2\", not a "
                                                           "number"),
    ("judge.jsonl", json.dumps({**RESULT, "chosen": "model: {}", "planned_steps": "1,000"}),
     "line 2: 'planned_steps' is \"1,000\", not a number or null")],
    ids=["cut-short", "merge-marker", "not-an-object", "another-file", "budget-text",
         "planned-text"])
def test_a_damaged_records_file_stops_in_one_line_naming_the_line(tmp_path, name, line, said):
    """A line cut short (a run killed while it wrote), a merge marker, or a record of another
    file: a traceback from deep in a table before (KeyError, JSONDecodeError), or worse a
    budget "2" read as another trial than budget 2, and run again."""
    first = {**RESULT, "loss": 1.0, "pair": "x", "chosen": "model: {}"}
    (tmp_path / name).write_text(json.dumps(first) + "\n" + line + "\n")
    with pytest.raises(SystemExit, match=rf"^{tmp_path / name}, {said}.*; fix or remove that "
                                         r"line$"):
        heldout.study.read_records(tmp_path / name)


def test_a_script_on_damaged_records_exits_with_one_line(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps(RESULT) + "\n" + json.dumps(RESULT)[:50])
    env = dict(os.environ, CHARLSTM_STUDY_RECORDS=str(tmp_path))
    out = subprocess.run([sys.executable, "study.py", "--list"], env=env, cwd=BENCHMARKS,
                         capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr == (
        f"{tmp_path / 'results.jsonl'}, line 2 is not JSON (Unterminated string starting at "
        "column 47); fix or remove that line\n")


def test_a_judge_record_without_its_later_fields_is_tabled(tmp_path, monkeypatch, capsys):
    """The fields judge.jsonl's records gained over time (code, plans, args) may be absent."""
    chosen = "model: {num_layers: 1, hidden_size: 64, dropout: 0.0, weight_drop: 0.0}\n"
    run = {"corpus": "tcl-lib", "budget": 2, "name": "v2", "best_val": 1.0, "steps": 10,
           "epochs": 1.0, "chosen": chosen}
    (tmp_path / "judge.jsonl").write_text(json.dumps(run) + "\n")
    monkeypatch.setattr(heldout, "JUDGED", tmp_path / "judge.jsonl")
    heldout.table()
    assert "| tcl-lib | 2 min | v2 | - | - | - | - | 10 | - |" in capsys.readouterr().out


def test_a_records_folder_that_cannot_be_made_or_is_not_there_stops_before_anything_runs(
        tmp_path, monkeypatch):
    """CHARLSTM_STUDY_RECORDS under a file stopped study.py and heldout.py on a traceback, and
    targets.py not at all (its runs would have trained before failing to record); one naming a
    folder that is not there gave empty tables, and fit.py a traceback."""
    (tmp_path / "file").write_text("not a folder")
    under_file, missing = tmp_path / "file" / "x", tmp_path / "missing"
    env = dict(os.environ, CHARLSTM_STUDY_RECORDS=str(under_file))
    out = subprocess.run([sys.executable, "study.py", "--list"], env=env, cwd=BENCHMARKS,
                         capture_output=True, text=True)
    assert (out.returncode, out.stderr) == (1, f"CHARLSTM_STUDY_RECORDS={under_file}: cannot make "
                                               "that folder (Not a directory); give a folder "
                                               "path\n")
    import targets
    study = heldout.study
    monkeypatch.setattr(targets, "run", lambda *a: pytest.fail("a run was started"))
    for folder, argv, said in [
            (under_file, [targets, "--pairs", "builtin"], "cannot make that folder"),
            (under_file, [heldout, "--list", "--corpora", "tcl-lib"], "cannot make that folder"),
            (missing, [study, "--table"], "no such folder; give the folder of a study's records "
                                          r"\(benchmarks/rerun.py --records DIR makes one\)$"),
            (missing, [heldout, "--table"], "no such folder"),
            (tmp_path / "file", [fit], "not a folder")]:
        monkeypatch.setattr(study, "FRESH", str(folder))
        monkeypatch.setattr(study, "RECORDS", folder)
        monkeypatch.setattr(sys, "argv", [argv[0].__name__ + ".py", *argv[1:]])
        with pytest.raises(SystemExit, match=rf"^CHARLSTM_STUDY_RECORDS={folder}: {said}"):
            argv[0].main()
    monkeypatch.setattr(study, "RECORDS", tmp_path)          # there, but not ours to write in
    monkeypatch.setattr(study, "FRESH", str(tmp_path))
    monkeypatch.setattr(study.os, "access", lambda *a: False)
    monkeypatch.setattr(sys, "argv", ["targets.py", "--pairs", "builtin"])
    with pytest.raises(SystemExit, match=r": cannot write in that folder; give one you can write "
                                         "in$"):
        targets.main()


def test_a_fit_with_too_few_runs_says_so_in_one_line(monkeypatch):
    """--until a day before the first runs (or a fresh study's empty records): an IndexError from
    deep in the fit before."""
    monkeypatch.setattr(sys, "argv", ["fit.py", "--until", "2026-11-29"])
    with pytest.raises(SystemExit, match=r"^fit.py: the runs recorded up to 2026-11-29 in .* give "
                                         r"0 fit corpora with 3 points or more; the law needs 2: "
                                         r"give a later --until, or run the study first "
                                         r"\(benchmarks/rerun.py\)$"):
        fit.main()


def test_a_bad_argument_is_refused_in_one_line_before_anything_runs(tmp_path, monkeypatch,
                                                                     capsys):
    """Each was a traceback (a budget not a number, a corpus no builder has, an --out under a
    file, apt-get failing), or was taken without a word: an unknown kind or --only name ran
    nothing, a study corpus without a validation fraction stopped on a KeyError when its turn
    came (after the trials before it), and --code without a checkout went on to its first run."""
    import targets
    study, corpora = heldout.study, heldout.corpora
    for module, name in ((study, "run_trial"), (heldout, "run"), (targets, "run"),
                         (corpora, "build")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("something was started"))
    (tmp_path / "file").write_text("not a folder")
    for module, args, said in [
            (study, ["--budgets", "2,x", "--list"], "argument --budgets: '2,x': give whole "
                                                     r"minutes, comma-separated \(2,10\)"),
            (study, ["--kinds", "grid,auot", "--list"], "argument --kinds: no kind named 'auot' "
                                                         r"\(one of grid, default, auto\)"),
            (study, ["--corpora", "cjk-man", "--list"], "argument --corpora: no study corpus "
                                                         r"named 'cjk-man' \(one of fortunes-100k,"),
            (heldout, ["--budgets", "0", "--list"], "argument --budgets: '0': give whole minutes"),
            (heldout, ["--corpora", "tcl-lib,tcl", "--list"], "argument --corpora: no corpus "
                                                               r"named 'tcl' \(one of "),
            (heldout, ["--code", str(tmp_path), "--list"], f"--code {tmp_path}: no charlstm "
                                                            "checkout there"),
            (targets, ["--pairs", "shakespeare-10", "--only", "recipee"],
             r"--only 'recipee': no run of that name in shakespeare-10 \(its runs: shipped, "
             r"recipe\)"),
            (targets, ["--code", str(tmp_path)], f"--code {tmp_path}: no charlstm checkout"),
            (corpora, ["tcl-lib", "tcl"], r"no corpus named 'tcl' \(one of fortunes-100k, "),
            (corpora, ["--out", str(tmp_path / "file" / "x")], r"--out .*/file/x: cannot make "
                                                                r"that folder \(Not a directory\)")]:
        monkeypatch.setattr(sys, "argv", [module.__name__ + ".py", *args])
        with pytest.raises(SystemExit) as stop:
            module.main()
        assert stop.value.code == 2, (module, args)
        assert re.search(rf"^{module.__name__}.py: error: {said}", capsys.readouterr().err, re.M)
    monkeypatch.setattr(corpora.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 100))
    monkeypatch.setattr(sys, "argv", ["corpora.py", "--install"])
    with pytest.raises(SystemExit, match=r"^corpora.py --install: apt-get install stopped \(exit "
                                         r"status 100, said above\); run it as root$"):
        corpora.main()


def test_help_says_what_a_script_does_and_starts_nothing(monkeypatch, capsys):
    """replan.py and extremes.py took no arguments: --help ran the analysis, and in extremes.py
    nine dry runs that time nets (minutes) after building a 500 MB text."""
    import extremes
    import replan
    monkeypatch.setattr(replan, "logged", lambda *a: pytest.fail("run folders were read"))
    monkeypatch.setattr(extremes, "text_path", lambda *a: pytest.fail("a text was built"))
    monkeypatch.setattr(extremes, "dry_run", lambda *a: pytest.fail("a dry run was started"))
    for module, what in ((replan, "When should a time-budgeted run plan its step count again?"),
                         (extremes, "What `charlstm train --data TEXT --minutes N --dry-run` "
                                    "chooses at the edges")):
        monkeypatch.setattr(sys, "argv", [module.__name__ + ".py", "--help"])
        with pytest.raises(SystemExit) as stop:
            module.main()
        out = capsys.readouterr().out
        assert stop.value.code == 0 and out.startswith(f"usage: {module.__name__}.py [-h]\n")
        assert what in " ".join(out.split())


SCRIPTS = ["study", "heldout", "fit", "targets", "rerun", "corpora", "race", "replan", "extremes",
           "run", "serve", "products", "step_profile", "subnormal", "torch_twin",
           "torch_reference", "gpu", "gpu_recipe"]


def test_every_script_says_what_it_does_and_what_each_option_is(monkeypatch):
    """--help of a dozen options said only their name (torch_reference.py's --layers, serve.py's
    --clients, run.py's --repeats, ...), and subnormal.py's description stopped at a colon."""
    import argparse
    import importlib
    parsers = []

    class Parsed(Exception):
        pass

    def parse_args(self, *a, **k):
        parsers.append(self)
        raise Parsed
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    assert sorted(SCRIPTS) == sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    for name in SCRIPTS:
        module = importlib.import_module(name)
        with pytest.raises(Parsed):
            module.main()
        parser = parsers.pop()
        assert " ".join(module.__doc__.split("\n\n")[0].split()) in " ".join(
            parser.description.split()), name
        assert [a.dest for a in parser._actions if not a.help] == [], name


def test_a_missing_optional_dependency_is_said_in_one_line(tmp_path):
    """Without torch, torch_twin.py and torch_reference.py ended on ModuleNotFoundError; without
    httpx, serve.py did, --help too."""
    for name in ("torch", "httpx"):
        (tmp_path / f"{name}.py").write_text(f'raise ModuleNotFoundError("No module named '
                                             f'{name!r}", name={name!r})\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]))
    torch = ("needs PyTorch, which is not installed here: pip install torch (into a scratch "
             "virtualenv; never a charlstm dependency)\n")
    for args, said in [(["torch_twin.py", "configs/shakespeare.yaml"], "torch_twin.py " + torch),
                       (["torch_reference.py", "--help"], "torch_reference.py " + torch),
                       (["serve.py", "runs/shakespeare"], "serve.py needs httpx, which is not "
                                                          "installed here: pip install httpx\n")]:
        out = subprocess.run([sys.executable, *args], env=env, cwd=BENCHMARKS,
                             capture_output=True, text=True)
        assert (out.returncode, out.stderr) == (1, said), args
    out = subprocess.run([sys.executable, "serve.py", "--help"], env=env, cwd=BENCHMARKS,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: serve.py")


def test_a_timing_script_refuses_a_bad_argument_or_a_failed_run_in_one_line(tmp_path,
                                                                             monkeypatch, capsys):
    """Each was a traceback (CalledProcessError from a bench that stopped, StatisticsError for
    --repeats 0, FileNotFoundError, ValueError, ZeroDivisionError, ConfigError, AssertionError
    from torch without CUDA or from a server that did not start), or an empty table for a
    configuration run.py does not have."""
    import gpu
    import products
    import run
    import serve
    import step_profile
    import torch_reference
    stops = tmp_path / "bench.py"
    stops.write_text("import sys\nsys.exit(\"Error: device 'cuda' needs CuPy\")\n")
    with pytest.raises(SystemExit, match=r"^bench.py stopped \(exit status 1\): Error: device "
                                         r"'cuda' needs CuPy$"):
        run.run_json([sys.executable, str(stops)], dict(os.environ))
    no_torch = tmp_path / "python"
    no_torch.write_text("#!/bin/sh\nexit 1\n")
    no_torch.chmod(0o755)
    monkeypatch.setattr(run, "run_json", lambda *a: pytest.fail("a bench was started"))
    monkeypatch.setattr(serve, "start_server", lambda *a: (_ for _ in ()).throw(AssertionError(
        "the server did not start: Usage: charlstm serve [OPTIONS] MODELS...\n\nError: Invalid "
        "value for 'MODELS...': Path 'nope' does not exist.\n")))
    monkeypatch.setattr(torch_reference.torch.cuda, "is_available", lambda: False)
    for module, args, said in [
            (run, ["--configs", "1x256,9x9"], r"--configs: no configuration '9x9' \(one of 1x256, "),
            (run, ["--repeats", "0"], "--repeats 0: give 1 or more"),
            (run, ["--torch-python", str(tmp_path / "nope")], f"--torch-python {tmp_path}/nope: "
                                                               "cannot run it"),
            (run, ["--torch-python", str(no_torch)], f"--torch-python {no_torch}: that Python has "
                                                      "no torch"),
            (gpu, ["--cpu-json", str(tmp_path / "cpu.json")], f"--cpu-json {tmp_path}/cpu.json: "
                                                               "cannot read it"),
            (gpu, ["--repeats", "0"], "--repeats 0: give 1 or more"),
            (products, ["--shapes", "256x32,128"], "argument --shapes: '128' is not HIDDENxBATCH"),
            (products, ["--rounds", "0"], "--rounds 0: give 1 or more"),
            (step_profile, ["--steps", "0"], "--steps 0: give 1 or more"),
            (torch_reference, ["--device", "cuda"], r"--device cuda: this torch finds no CUDA GPU"),
            (serve, ["runs/x", "--clients", "1", "0"], "--clients: give 1 or more clients"),
            (serve, ["runs/x", "--sequential", "0"], "--sequential 0: give 1 or more")]:
        monkeypatch.setattr(sys, "argv", [module.__name__ + ".py", *args])
        with pytest.raises(SystemExit) as stop:
            module.main()
        assert stop.value.code == 2, (module, args)
        assert re.search(rf"^{module.__name__}.py: error: {said}", capsys.readouterr().err, re.M)
    for module, args, said in [
            (step_profile, ["--set", "model.nope=1"], "step_profile.py: --set 'model.nope=1': "
                                                      "unknown key 'model.nope'"),
            (serve, ["nope"], r"serve.py: charlstm serve did not start: Error: Invalid value for "
                              r"'MODELS...': Path 'nope' does not exist.$")]:
        monkeypatch.setattr(sys, "argv", [module.__name__ + ".py", *args])
        with pytest.raises(SystemExit, match=f"^{said}"):
            module.main()


def test_a_checkpoint_or_run_folder_that_cannot_be_read_is_said_in_one_line(tmp_path,
                                                                           monkeypatch, capsys):
    """subnormal.py without the held-out study's run folders, or given a damaged file; a
    torch_twin.py config that is not there; race.py on a damaged run folder or an --out under a
    file: tracebacks before."""
    import race
    import subnormal
    import torch_twin
    garbage = tmp_path / "last.npz"
    garbage.write_text("not a checkpoint")
    monkeypatch.setattr(subnormal, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(sys, "argv", ["subnormal.py"])
    with pytest.raises(SystemExit) as stop:
        subnormal.main()
    assert stop.value.code == 2 and re.search(
        r"^subnormal.py: error: --adam .*/runs/judge-french-man-10m-v2:w1.4/last.npz: no such "
        r"checkpoint \(the default is a run of the held-out study: give one of yours\)$",
        capsys.readouterr().err, re.M)
    monkeypatch.setattr(sys, "argv", ["subnormal.py", "--adam", str(garbage), "--steps",
                                      str(garbage)])
    with pytest.raises(SystemExit, match=rf"^subnormal.py: {garbage}: not a checkpoint with Adam "
                                         r"moments \(.*\)$"):
        subnormal.main()
    monkeypatch.setattr(sys, "argv", ["torch_twin.py", str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit, match=r"^torch_twin.py: config file '.*nope.yaml' not found$"):
        torch_twin.main()
    monkeypatch.setattr(race.subprocess, "run", lambda *a, **k: pytest.fail("a run was started"))
    race_out = tmp_path / "race"
    (race_out / "lstm").mkdir(parents=True)
    (race_out / "lstm" / "last.npz").write_text("not a checkpoint")
    args = ["--config", "configs/tiny.yaml", "--only", "lstm", "--out"]
    with pytest.raises(SystemExit, match=rf"^race.py: lstm: '{race_out}/lstm/last.npz' is not a "
                                         r"readable checkpoint \(.*\); remove .*/lstm to train "
                                         r"it anew, or choose another --out$"):
        race.main([*args, str(race_out)])
    (race_out / "lstm" / "race-entry.json").write_text("{cut")
    with pytest.raises(SystemExit, match=rf"^race.py: lstm: {race_out}/lstm/race-entry.json "
                                         r"cannot be read \(.*\); remove .*/lstm to train it "
                                         r"anew, or choose another --out$"):
        race.main([*args, str(race_out)])
    garbage.rename(tmp_path / "file")
    with pytest.raises(SystemExit, match=r"^race.py: --out .*/file: cannot make .*/file/lstm "
                                         r"\(Not a directory\); give a folder path$"):
        race.main([*args, str(tmp_path / "file")])


def test_gpu_recipe_masks_time_the_heavy_set_and_a_missing_gpu_is_one_line(tmp_path,
                                                                          monkeypatch):
    """recipe._regularize gained its budget argument and gpu_recipe.py's --masks (and --cpu)
    stopped on a TypeError; without CuPy, --timing and --masks ended on CharlstmError."""
    import gpu_recipe
    from charlstm import backend
    from charlstm.errors import CharlstmError
    assert gpu_recipe.recipe_heavy() == {"model.dropout": 0.25, "model.dropout_mask": "window",
                                         "model.weight_drop": 0.25, "optim.weight_decay": 0.1}

    def no_gpu(device):
        if device == "cuda":
            raise CharlstmError("device 'cuda' needs CuPy, which is not installed")
    monkeypatch.setattr(backend, "require", no_gpu)
    monkeypatch.setattr(gpu_recipe, "timing", lambda *a: pytest.fail("nets were timed"))
    monkeypatch.setattr(gpu_recipe, "masks", lambda *a: pytest.fail("masks were timed"))
    for flag in ("--timing", "--masks"):
        monkeypatch.setattr(sys, "argv", ["gpu_recipe.py", flag, "--out", str(tmp_path)])
        with pytest.raises(SystemExit, match=r"^gpu_recipe.py: device 'cuda' needs CuPy, which "
                                             r"is not installed$"):
            gpu_recipe.main()


def test_serve_refuses_a_json_it_could_not_write_before_it_measures(tmp_path, monkeypatch,
                                                                   capsys):
    """--json in a folder that is not there ended the sitting on FileNotFoundError after every
    measure and the soak (minutes), their figures lost."""
    import serve
    monkeypatch.setattr(serve, "start_server", lambda *a: pytest.fail("a server was started"))
    monkeypatch.setattr(sys, "argv", ["serve.py", "runs/x", "--json",
                                      str(tmp_path / "gone" / "serve.json")])
    with pytest.raises(SystemExit) as stop:
        serve.main()
    assert stop.value.code == 2 and capsys.readouterr().err.endswith(
        f"serve.py: error: --json {tmp_path}/gone/serve.json: no folder {tmp_path}/gone to "
        "write it in\n")


def test_gpu_refuses_a_cpu_json_that_is_not_a_table_before_it_benches(tmp_path, monkeypatch,
                                                                      capsys):
    """A --cpu-json holding a list ended gpu.py on AttributeError after its first benches."""
    import gpu
    monkeypatch.setattr(gpu, "run_json", lambda *a: pytest.fail("a bench was started"))
    (tmp_path / "cpu.json").write_text("[1200, 3400]")
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--cpu-json", str(tmp_path / "cpu.json")])
    with pytest.raises(SystemExit) as stop:
        gpu.main()
    assert stop.value.code == 2 and capsys.readouterr().err.endswith(
        f"gpu.py: error: --cpu-json {tmp_path}/cpu.json: not a table of chars/s by "
        "configuration ({\"2x512, 64, 100\": 12000, ...})\n")


def test_torch_reference_refuses_sizes_below_1_in_one_line(monkeypatch, capsys):
    """--layers 0, --hidden 0, --steps 0 or --threads 0 ended on torch's ValueError, an
    IndexError or a RuntimeError."""
    import torch_reference
    monkeypatch.setattr(torch_reference, "train_rate", lambda *a, **k: pytest.fail("timed"))
    for option in ("--layers", "--hidden", "--steps", "--threads"):
        monkeypatch.setattr(sys, "argv", ["torch_reference.py", option, "0"])
        with pytest.raises(SystemExit) as stop:
            torch_reference.main()
        assert stop.value.code == 2 and capsys.readouterr().err.endswith(
            f"torch_reference.py: error: argument {option}: 0: give 1 or more\n")


def test_products_refuses_threads_below_1_in_one_line(monkeypatch, capsys):
    """--threads 0 ended on torch's RuntimeError (set_num_threads expects a positive integer)."""
    import products
    monkeypatch.setattr(products, "set_threads", lambda *a: pytest.fail("threads were set"))
    monkeypatch.setattr(sys, "argv", ["products.py", "--threads", "0"])
    with pytest.raises(SystemExit) as stop:
        products.main()
    assert stop.value.code == 2 and capsys.readouterr().err.endswith(
        "products.py: error: --threads 0: give 1 or more\n")
