"""Fit the recipe's loss law to the study's runs on the fit corpora; print the constants that
charlstm/recipe.py holds, with the fit's residuals and its range.

    python benchmarks/fit.py                 # the exponent's profile, the law, its range
    python benchmarks/fit.py --rows          # also every point with its fitted loss
    python benchmarks/fit.py --forms         # other forms of the law, fitted and left out
    python benchmarks/fit.py --until 2026-12-06 --judge ["Kaplan's N-D interaction"]
                                             # the held-out pairs' recorded nets ranked by
                                             # recipe.LAW, by a form (default: alpha per layer
                                             # count) and by the recipe's form, fitted here
    python benchmarks/fit.py --until 2026-12-05 --choices TEXT ... [--budgets 10 --widths]
                                             # the recipe's choices at 2, 10 and 30 minutes with
                                             # recipe.LAW and with this fit, on one timing a text
                                             # (--widths: every net it weighed, and its plan)

The law, for a run of the recipe's optimizer, batch and schedule (validation loss, nats/char):

    loss = E[corpus] + s[corpus] (A k[layers] / N^alpha + B m[layers] / D^beta[layers])

- N: the LSTM's weights and biases, not the embedding or the head (a vocabulary's size changes
  what a step costs, which the recipe times, not what the recurrent net can hold);
- D: the characters read in training (steps x batch x window);
- k, m, beta: one layer's are 1, 1 and beta; two layers' are fitted (they start slower and
  learn faster per character read);
- E and s: each corpus's floor and scale; the recipe's choice depends on neither (an argmin of
  the bracket), and `charlstm train --dry-run` predicts a new text's loss with the E and s of
  the fit corpus whose bz2 bits per character are closest to the text's.

Runs are the study's (study/results.jsonl, study/heldout.jsonl for pycode-50m, whose validation
split is JSON: its runs are measured on held-out code) and the targets' (study/targets.jsonl:
tiny-shakespeare and the built-in corpus), measured from the carried state, with the recipe's
optimizer (not today's defaults). Repeated runs of one configuration count as one point (their
mean). The exponent alpha is profiled: for each value the rest is fitted (Levenberg-Marquardt on
the squared residuals, in NumPy), and the value kept is the one whose fit best predicts each
corpus when that corpus is left out (its E and s then fitted alone).

Other forms (`--forms`, FORMS): an exponent alpha per layer count; a data-constrained term
(Muennighoff et al., 2023: U (1 + S (1 - exp(-(R-1)/S))) for R readings of U training characters,
S per regularizer, or one S for every run); a cost of reading the text again (without the heavy
set, or on every run); Kaplan et al.'s ((N_c/N)^(alpha/b) +
D_c/D)^b. Each is fitted and left out corpus by corpus as the recipe's, and judged three ways:
how well it predicts a left-out corpus's losses, how much its ranking of each fit pair's nets
loses, and the same with the pair's corpus left out of the fit (what the recipe would lose on a
text the law never saw). None is better on all three, and none has been judged on held-out texts
(RESULTS.md, "The recipe's loss law" and "The targets"), so the recipe keeps its form and its
regularization bands (recipe._regularize).

Every run records its text's fingerprint (corpora.fingerprint); runs on a text rebuilt elsewhere
are another corpus here (on_text), never pooled with the first text's.

The held-out corpora (benchmarks/heldout.py) take no part in a fit; `--judge` only ranks their
recorded nets with laws fitted without them.
"""

import argparse
import bz2
from datetime import date
from pathlib import Path

import numpy as np
import yaml

import corpora
import heldout
import study
from charlstm.cells import Cell
from charlstm.errors import CharlstmError
from charlstm.recipe import params_of

HERE = Path(__file__).resolve().parent
STUDY = study.RECORDS
B, T = 32, 50                      # the recipe's batch and window (recipe.FIXED)
ALPHAS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
BPC_CHARS = 1_000_000              # bz2's bits per character over the text's first this many
# recipe.LAW was fitted to the runs recorded up to this date; `--until` takes later ones in
LAW_UNTIL = "2026-12-03"


def lstm_params(L, H, E):
    """The LSTM's weights and biases, no embedding, no head (the recipe's count)."""
    return params_of(1, E, H, L, Cell("lstm", False, False), core=True)


def bz2_bits_per_char(text):
    """How hard a text is to predict, cheaply: bz2's bits per character of its first BPC_CHARS
    (charlstm.recipe.bits_per_char measures a new text the same way)."""
    part = text[:BPC_CHARS]
    return 8 * len(bz2.compress(part.encode("utf-8"), 9)) / max(len(part), 1)


# The fingerprints of the texts the study began with, where a rebuild is known to give that
# text: the Debian package's text of the same length as the study's (RESULTS.md, "Corpora and
# measurement"). pydocs-10m and pycode-50m rebuild to other lengths on this machine.
FIRST_TEXTS = {"fortunes-100k": "73951f9baf74d5b2", "russian-2m": "1e12a83f753153e0",
               "fortunes-1m": "cbe47f8eebb32870"}


def on_text(r):
    """The name a run's corpus has in the fit: its own, for the text the study began with (runs
    recorded before fingerprints, or with its fingerprint), else the name and the text's
    fingerprint. A text rebuilt on another machine is another corpus, with its own floor and
    scale, and joins the fit only with 3 points of its own (the two pycode-50m runs of
    2026-12-04 read another site-packages: validation loss 2.10 against 0.72 for the same net;
    their records say "text": "other")."""
    if r.get("text", FIRST_TEXTS.get(r["corpus"])) == FIRST_TEXTS.get(r["corpus"]):
        return r["corpus"]
    return f"{r['corpus']}@{r['text'][:8]}"


def runs(until=LAW_UNTIL):
    """Every run recorded up to the day `until` with the recipe's optimizer on a fit corpus,
    measured from the carried state: dicts of corpus, budget, L, H, N, D, U (training
    characters), loss."""
    out = []
    held = {(h["corpus"], h["budget"], h["name"]): h["loss"]
            for h in study.read_records(STUDY / "heldout.jsonl")}
    for r in study.read_records(STUDY / "results.jsonl"):
        if r.get("eval") != "carried" or r["kind"] == "default" or r["corpus"] in corpora.JUDGES \
                or r["date"][:10] > until:
            continue
        m = (yaml.safe_load(r["chosen"])["model"] if "chosen" in r else
             {k.split(".")[1]: v for k, v in r["settings"].items() if k.startswith("model.")})
        loss = r["best_val"]
        if r["corpus"] == "pycode-50m":          # its validation split is JSON: held-out code
            loss = held.get((r["corpus"], r["budget"], r["name"]))
            if loss is None:
                continue
        out.append({"corpus": on_text(r), "budget": r["budget"], "steps": r["steps"],
                    "epochs": r["epochs"], "loss": loss, "model": m})
    for r in study.read_records(STUDY / "targets.jsonl"):
        cfg = yaml.safe_load(r["chosen"])
        if r.get("eval") != "carried" or cfg["optim"]["lr"] != 0.0035 or r["date"][:10] > until:
            continue                             # today's defaults' optimizer: not the recipe's
        out.append({"corpus": "builtin" if r["pair"] == "builtin" else "tinyshakespeare",
                    "budget": round(cfg["train"]["max_minutes"] or 0), "steps": r["steps"],
                    "epochs": r["epochs"], "loss": r["best_val"], "model": cfg["model"]})
    for r in out:
        m = r.pop("model")
        r.update(L=m["num_layers"], H=m["hidden_size"], dropout=m.get("dropout") or 0.0,
                 heavy=bool(m.get("weight_drop")), N=lstm_params(m["num_layers"],
                                                                  m["hidden_size"],
                                                                  m.get("embedding_size", 64)),
                 D=r["steps"] * B * T)
        r["U"] = r["D"] / r["epochs"]
    return out


def judged_points():
    """The held-out pairs' runs (heldout.py's records) as points, each pair's nets that the recipe
    could choose there: no dropout neighbours (the bracket cannot tell their nets apart), not
    char-rnn's defaults, two layers only inside the law's fitted vocabularies (recipe._one_layer).
    Seeds are averaged per net (groups)."""
    from charlstm.recipe import FITTED
    lo, hi = FITTED["symbols"]
    dropout = {n for n in heldout.NEIGHBOURS if n.startswith("d")}
    rows = []
    for r in study.read_records(heldout.JUDGED):
        role = heldout.SEEDED.sub("", r["name"].split(":")[-1])
        cfg = yaml.safe_load(r["chosen"])
        m = cfg["model"]
        if role in dropout or role == "default" or (
                m["num_layers"] > 1 and not lo <= m["vocab_size"] <= hi):
            continue
        D = r["steps"] * cfg["train"]["batch_size"] * cfg["train"]["seq_len"]
        rows.append({"corpus": r["corpus"], "budget": r["budget"], "L": m["num_layers"],
                     "H": m["hidden_size"], "dropout": m.get("dropout") or 0.0,
                     "heavy": bool(m.get("weight_drop")), "loss": r["best_val"], "D": D,
                     "U": D / r["epochs"],
                     "N": lstm_params(m["num_layers"], m["hidden_size"], m["embedding_size"])})
    return groups(rows)


def judge(points, alpha, law, name="alpha per layer count"):
    """The table of `--judge`: each held-out pair's nets ranked by recipe.LAW, by the form `name`
    of FORMS fitted to `points`, and by `law` (the recipe's form fitted to them with exponent
    `alpha`)."""
    from charlstm import recipe
    held = judged_points()
    candidate = FORMS[name]
    laws = {"recipe.LAW": (dict(recipe.LAW), None),
            name: (fit(points, None, candidate)[2], candidate),
            f"the recipe's form refitted (alpha {alpha})": (law, None)}
    lost = {name: regret(law, held, form) for name, (law, form) in laws.items()}
    print("| corpus | budget | nets | " + " | ".join(laws) + " |")
    print("| --- | --- | --- |" + " --- |" * len(laws))
    for key in lost["recipe.LAW"]:
        nets = sum((p["corpus"], p["budget"]) == key for p in held)
        print(f"| {key[0]} | {key[1]} min | {nets} | " + " | ".join(
            f"{p['L']} x {p['H']}, dropout {p['dropout']:g}: {v:+.4f}"
            for p, v in (lost[name][key] for name in laws)) + " |")
    print("| summed | | | " + " | ".join(f"{sum(v for _, v in lost[name].values()):.3f}"
                                       for name in laws) + " |")


def groups(rows):
    """Runs of one corpus, budget and configuration as one point: their mean loss and reading."""
    out = {}
    for r in rows:
        out.setdefault((r["corpus"], r["budget"], r["L"], r["H"], r["dropout"], r["heavy"]),
                       []).append(r)
    return [{**g[0], "loss": float(np.mean([r["loss"] for r in g])),
             "D": float(np.mean([r["D"] for r in g])), "runs": len(g)} for g in out.values()]


def bracket(law, L, N, D):
    """The law without its corpus's floor and scale: what the recipe minimizes."""
    L, N, D = (np.asarray(a, dtype=np.float64) for a in (L, N, D))
    two = L > 1
    return (law["A"] * np.where(two, law["k2"], 1.0) / N ** law["alpha"]
            + law["B"] * np.where(two, law["m2"] / D ** law["beta2"], 1.0 / D ** law["beta"]))


# Other forms of the bracket, fitted and judged as the recipe's is (`--forms`): each a function
# of the constants and of the points' arrays (L, N, D, U: training characters, heavy), with its
# constants fitted in logs where named in `logged` and two or more starting points.
def _per_layer_alpha(law, P):
    two = P["L"] > 1
    return (law["A"] * np.where(two, law["k2"] / P["N"] ** law["alpha2"],
                                1.0 / P["N"] ** law["alpha"])
            + law["B"] * np.where(two, law["m2"] / P["D"] ** law["beta2"],
                                  1.0 / P["D"] ** law["beta"]))


def _repeats(law, P):
    """Muennighoff et al.'s effective data: R readings of U characters count as
    U (1 + S (1 - exp(-(R - 1) / S))), S for dropout alone and S_heavy for the heavy set."""
    S = np.where(P["heavy"] > 0, law["S_heavy"], law["S"])
    R = P["D"] / P["U"]
    D = np.where(R > 1, P["U"] * (1 + S * -np.expm1(-(R - 1) / S)), P["D"])
    return bracket(law, P["L"], P["N"], D)


def _repeats_one(law, P):
    """The effective data with one S for every regularization: the recipe gives each net the
    regularization of its epochs, so the cost of reading again is the cost under that."""
    return _repeats(dict(law, S_heavy=law["S"]), P)


def _epoch_cost(law, P, every=False):
    """A cost of reading the text again, C log(R)^g, for runs without the heavy set (`every`:
    for every run)."""
    R = np.maximum(P["D"] / P["U"], 1.0)
    return (bracket(law, P["L"], P["N"], P["D"])
            + law["C"] * np.log(R) ** law["g"] * ((P["heavy"] == 0) | every))


def _kaplan(law, P):
    """Kaplan et al.'s interaction, ((N_c / N)^(alpha / b) + D_c / D)^b, per layer count."""
    two = P["L"] > 1
    Nc, Dc, b = (np.where(two, law[k + "2"], law[k]) for k in ("Nc", "Dc", "b"))
    return np.where(two, law["k2"], 1.0) * ((Nc / P["N"]) ** (law["alpha"] / b) + Dc / P["D"]) ** b


def _recipes(law, P):
    """The recipe's bracket on the points' arrays (the form FORMS's others are judged against)."""
    return bracket(law, P["L"], P["N"], P["D"])


def _law(alpha):
    return {"bracket": _recipes,
            "fixed": {"alpha": alpha}, "logged": {"A", "k2", "B", "m2"},
            "starts": [{"A": 30.0, "k2": 1.0, "B": 30.0, "m2": 1.0, "beta": b, "beta2": b}
                       for b in (0.2, 0.5)]}


def _form(bracket_of, fixed=None, logged=(), **extra):
    """A form: the recipe's constants' starts with `extra` ones (each a tuple of starts)."""
    base = _law(0.15)
    keys = list(extra)
    starts = [dict(s, **dict(zip(keys, v))) for s in base["starts"]
              for v in zip(*extra.values())] if extra else base["starts"]
    return {"bracket": bracket_of, "fixed": fixed or {}, "logged": base["logged"] | set(logged),
            "starts": starts}


FORMS = {
    "the recipe's (alpha 0.15)": _law(0.15),
    "alpha per layer count": _form(_per_layer_alpha, alpha=(0.15, 0.3), alpha2=(0.15, 0.3)),
    "effective data, S per regularizer": _form(_repeats, {"alpha": 0.15}, {"S", "S_heavy"},
                                               S=(5.0, 50.0), S_heavy=(5.0, 50.0)),
    "effective data, one S": _form(_repeats_one, {"alpha": 0.15}, {"S"}, S=(5.0, 50.0)),
    "a cost of epochs": _form(_epoch_cost, {"alpha": 0.15}, {"C"}, C=(1e-3, 1e-2),
                              g=(2.0, 2.0)),
    "a cost of epochs, every run": _form(lambda law, P: _epoch_cost(law, P, every=True),
                                         {"alpha": 0.15}, {"C"}, C=(1e-3, 1e-2), g=(2.0, 1.0)),
    "Kaplan's N-D interaction": {
        "bracket": _kaplan, "fixed": {}, "logged": {"Nc", "Dc", "Nc2", "Dc2", "k2"},
        "starts": [{"Nc": nc, "Dc": dc, "alpha": a, "b": b, "Nc2": nc, "Dc2": dc, "b2": b,
                    "k2": 1.0} for nc in (1e4, 1e6) for dc in (1e6, 1e8) for a in (0.1, 0.3)
                   for b in (0.3, 0.6)]},
}


def _arrays(points):
    P = {k: np.array([p[k] for p in points], dtype=np.float64)
         for k in ("L", "N", "D", "U", "loss")}
    P["heavy"] = np.array([float(p["heavy"]) for p in points])
    return P


def _lm(residuals, theta, iters=300):
    """Levenberg-Marquardt: the theta that minimizes the sum of squared residuals(theta)."""
    lam, r = 1e-2, residuals(theta)
    for _ in range(iters):
        J = np.empty((len(r), len(theta)))
        for j in range(len(theta)):
            t2 = theta.copy()
            t2[j] += 1e-6
            J[:, j] = (residuals(t2) - r) / 1e-6
        A, g = J.T @ J, J.T @ r
        delta = np.zeros_like(theta)
        while lam < 1e9:
            delta = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-9), -g)
            r2 = residuals(theta + delta)
            if np.sum(r2 ** 2) < np.sum(r ** 2):
                theta, r, lam = theta + delta, r2, max(lam / 3, 1e-9)
                break
            lam *= 4
        if lam >= 1e9 or np.max(np.abs(delta)) < 1e-9:
            break
    return theta, r


def fit(points, alpha, form=None):
    """The law with exponent `alpha` (or another `form` of FORMS) fitted to `points`: (E by
    corpus, s by corpus, law, residuals), the best of its starting points. The first corpus's s
    is 1."""
    form = form or _law(alpha)
    corpora_ = sorted({p["corpus"] for p in points})
    n = len(corpora_)
    ci = np.array([corpora_.index(p["corpus"]) for p in points])
    P = _arrays(points)
    names = list(form["starts"][0])

    def unpack(th):
        scale = np.exp(np.concatenate([[0.0], th[n:2 * n - 1]]))
        law = {k: float(np.exp(v)) if k in form["logged"] else float(v)
               for k, v in zip(names, th[2 * n - 1:])}
        return th[:n], scale, dict(law, **form["fixed"])

    def residuals(th):
        E, scale, law = unpack(th)
        return E[ci] + scale[ci] * form["bracket"](law, P) - P["loss"]

    best = None
    for start in form["starts"]:
        theta = np.concatenate([[1.0] * n, [0.0] * (n - 1),
                                [np.log(v) if k in form["logged"] else v
                                 for k, v in start.items()]])
        with np.errstate(all="ignore"):
            theta, r = _lm(residuals, theta)
        if np.all(np.isfinite(r)) and (best is None or np.sum(r ** 2) < np.sum(best[1] ** 2)):
            best = (theta, r)
    E, scale, law = unpack(best[0])
    return dict(zip(corpora_, E)), dict(zip(corpora_, scale)), law, best[1]


def fit_corpus(law, points, form=None):
    """One corpus's E and s with the law's shared constants held: (E, s, residuals)."""
    P = _arrays(points)
    X = np.stack([np.ones_like(P["loss"]), (form["bracket"] if form else _recipes)(law, P)],
                 axis=1)
    coef, *_ = np.linalg.lstsq(X, P["loss"], rcond=None)
    return coef[0], coef[1], X @ coef - P["loss"]


def leave_one_out(points, alpha, form=None, lost=None):
    """{corpus: its residuals when the law is fitted without it} (corpora with 3 points or
    more). The recipe needs the ranking within a corpus: these residuals measure it. `lost`, a
    dict, gets each corpus's regret (below) under the law fitted without it: what the recipe's
    pick would lose on a text it never saw."""
    out = {}
    for c in sorted({p["corpus"] for p in points}):
        mine = [p for p in points if p["corpus"] == c]
        if len(mine) > 2:
            law = fit([p for p in points if p["corpus"] != c], alpha, form)[2]
            out[c] = fit_corpus(law, mine, form)[2]
            if lost is not None:
                lost[c] = sum(v for _, v in regret(law, mine, form).values())
    return out


def regret(law, points, form=None):
    """{(corpus, budget): (the point the law ranks first, its loss above the best point's)}:
    how much choosing among a pair's points by the law would have lost."""
    out = {}
    for key in sorted({(p["corpus"], p["budget"]) for p in points}):
        mine = [p for p in points if (p["corpus"], p["budget"]) == key]
        if len(mine) > 2:
            P = _arrays(mine)
            pick = int(np.argmin((form["bracket"] if form else _recipes)(law, P)))
            out[key] = (mine[pick], P["loss"][pick] - P["loss"].min())
    return out


def forms(points):
    """The table of `--forms`: each form's in-sample and left-out residuals, and its regret."""
    print("| form | shared constants | in-sample rms | rms of each corpus left out | mean | regret "
          "summed over the fit pairs | the same, each corpus left out |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, form in FORMS.items():
        _, _, law, res = fit(points, None, form)
        unseen = {}
        with np.errstate(over="ignore"):           # a left-out fit's exponent may run wild
            cv = {c: _rms(r) for c, r in leave_one_out(points, None, form, unseen).items()}
        lost = sum(v for _, v in regret(law, points, form).values())
        print(f"| {name} | {len(form['starts'][0])} | {_rms(res):.4f} | "
              + ", ".join(f"{c} {v:.4f}" for c, v in cv.items())
              + f" | {np.mean(list(cv.values())):.4f} | {lost:.3f} | {sum(unseen.values()):.3f} |")


def corpus_text(name):
    """The text of a fit corpus as built here (for a fingerprinted name, today's build)."""
    name = name.split("@")[0]
    if name == "tinyshakespeare":
        path = HERE.parent / "data" / "tinyshakespeare" / "input.txt"
        if not path.exists():
            raise SystemExit(f"{path} not found: it fits the law (README, Quickstart: copy it "
                             "there, or run `charlstm train configs/shakespeare.yaml` once)")
        return path.read_text("utf-8")
    return corpora.build(name).read_text("utf-8")


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


def fit_points(until=LAW_UNTIL):
    """The points of corpora with 3 or more (one point cannot tell a corpus's E from its s)."""
    points = groups(runs(until))
    count = {c: sum(p["corpus"] == c for p in points) for c in {p["corpus"] for p in points}}
    return [p for p in points if count[p["corpus"]] > 2]


def _day(text):
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: give YYYY-MM-DD, for example "
                                         f"{LAW_UNTIL}") from None


def choices(law, E, scale, texts, budgets=(2, 10, 30), widths=False):
    """The recipe's net and dropout for each text and budget with recipe.LAW and with `law` (E
    and s by corpus: its LIKE), both on one timing of each text (in this process). `widths`:
    also every net recipe.LAW weighed there, its plan and its predicted loss above the choice's."""
    from charlstm import recipe
    from charlstm.config import load_config_keys
    from charlstm.corpus import prepare
    laws = {"recipe.LAW": (dict(recipe.LAW), dict(recipe.LIKE)),
            "this fit": (law, {c: (bz2_bits_per_char(corpus_text(c)), E[c], scale[c]) for c in E})}
    shipped = laws["recipe.LAW"]
    print("| text | minutes | " + " | ".join(laws) + " |")
    print("| --- | --- |" + " --- |" * len(laws))
    try:
        for path in texts:
            keys = lambda minutes: load_config_keys(None, [f"data.path={path}", "train.recipe=auto",
                                                           f"train.max_minutes={minutes}"])
            corpus = prepare(keys(1)[0].data, False, lambda *a, **k: None)
            windows = recipe._windows(corpus.tokens, int(0.9 * len(corpus.tokens)), B, T)
            timed = {}

            def timer(V, E_, H, L, B_, T_, cell, dropout, device="cpu"):
                if (L, H) not in timed:
                    timed[L, H] = recipe.time_step(V, E_, H, L, B_, T_, cell, dropout, device,
                                                   windows=windows)
                return timed[L, H]
            for minutes in budgets:
                picked, weighed = [], {}
                for name, (law_, like) in laws.items():
                    recipe.LAW.clear(), recipe.LAW.update(law_)
                    recipe.LIKE.clear(), recipe.LIKE.update(like)
                    choice = recipe.choose(*keys(minutes), corpus, timer=timer)
                    m = choice.cfg.model
                    picked.append(f"{m.num_layers} x {m.hidden_size}, dropout {m.dropout:g}"
                                  + (", weight drop" if m.weight_drop else ""))
                    if name == "recipe.LAW":
                        weighed = choice.plans
                        best = weighed[m.num_layers, m.hidden_size].loss
                print(f"| {Path(path).stem} | {minutes:g} | " + " | ".join(picked) + " |",
                      flush=True)
                for (L, H), p in sorted(weighed.items()) if widths else ():
                    print(f"    recipe.LAW, {L} x {H}: {p.steps:,.0f} steps, {p.epochs:.1f} "
                          f"epochs, predicted {p.loss - best:+.4f}")
    finally:
        recipe.LAW.clear(), recipe.LAW.update(shipped[0])
        recipe.LIKE.clear(), recipe.LIKE.update(shipped[1])


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--rows", action="store_true", help="every point with its fitted loss")
    ap.add_argument("--forms", action="store_true",
                    help="other forms of the law (FORMS), fitted and left out as it is")
    ap.add_argument("--until", default=LAW_UNTIL, metavar="YYYY-MM-DD",
                    type=_day,
                    help=f"fit the runs recorded up to this day (default {LAW_UNTIL}: "
                         "recipe.LAW's fit)")
    ap.add_argument("--judge", nargs="?", const="alpha per layer count", metavar="FORM",
                    choices=list(FORMS),
                    help="rank the held-out pairs' recorded nets by recipe.LAW, by FORM (one of "
                         "FORMS; default: alpha per layer count) and by this fit")
    ap.add_argument("--choices", nargs="+", metavar="TEXT",
                    help="the recipe's choices on these texts with recipe.LAW and with this fit")
    ap.add_argument("--budgets", type=float, nargs="+", default=(2, 10, 30), metavar="MINUTES",
                    help="the budgets of --choices (default 2 10 30)")
    ap.add_argument("--widths", action="store_true",
                    help="with --choices: every net recipe.LAW weighed, its steps, epochs and "
                         "predicted loss above its choice")
    a = ap.parse_args()
    study.records_folder(write=False)
    points = fit_points(a.until)
    fitted = {p["corpus"] for p in points}
    if len(fitted) < 2:                     # each corpus left out is fitted from the others
        raise SystemExit(f"fit.py: the runs recorded up to {a.until} in {STUDY} give "
                         f"{len(fitted)} fit corpora with 3 points or more; the law needs 2: give "
                         "a later --until, or run the study first (benchmarks/rerun.py)")
    if a.forms:
        return forms(points)
    print("| alpha | in-sample rms | rms of each corpus left out of the fit | mean |")
    print("| --- | --- | --- | --- |")
    scores = {}
    for alpha in ALPHAS:
        res = fit(points, alpha)[3]
        cv = {c: _rms(r) for c, r in leave_one_out(points, alpha).items()}
        scores[alpha] = float(np.mean(list(cv.values())))
        print(f"| {alpha} | {_rms(res):.4f} | " + ", ".join(f"{c} {v:.4f}" for c, v in cv.items())
              + f" | {scores[alpha]:.4f} |")
    alpha = min(scores, key=scores.get)
    E, scale, law, res = fit(points, alpha)
    if a.judge:
        return judge(points, alpha, law, a.judge)
    if a.choices:
        try:
            return choices(law, E, scale, a.choices, a.budgets, a.widths)
        except CharlstmError as e:
            raise SystemExit(f"fit.py --choices: {e}") from None
    print(f"\nalpha {alpha}: {len(points)} points on {len(E)} corpora, residual rms "
          f"{_rms(res):.4f}, largest {np.max(np.abs(res)):.4f}")
    print("| corpus | E | s | points | rms | bz2 bits/char | chars | symbols |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in sorted(E):
        mine = [x for x, p in zip(res, points) if p["corpus"] == c]
        text = corpus_text(c)
        print(f"| {c} | {E[c]:.3f} | {scale[c]:.3f} | {len(mine)} | {_rms(mine):.4f} | "
              f"{bz2_bits_per_char(text):.3f} | {len(text):,} | {len(set(text)):,} |")
    print("\nLAW = {" + ", ".join(f'"{k}": {v:.4g}' for k, v in law.items()) + "}")
    print("LIKE = {" + ", ".join(f'"{c}": ({bz2_bits_per_char(corpus_text(c)):.3f}, {E[c]:.3f}, '
                                 f'{scale[c]:.3f})' for c in sorted(E)) + "}")
    N, D = [p["N"] for p in points], [p["D"] for p in points]
    per_char = [p["N"] / p["U"] for p in points]
    print(f"range: N {min(N):,}-{max(N):,} parameters, D {min(D) / 1e6:.1f}M-"
          f"{max(D) / 1e6:.1f}M characters read, {min(per_char):.3f}-{max(per_char):.1f} "
          f"parameters per training character, {min(p['U'] for p in points):,.0f}-"
          f"{max(p['U'] for p in points):,.0f} training characters")
    print("\n| corpus | budget | the law's first | its loss above the pair's best |")
    print("| --- | --- | --- | --- |")
    for (c, budget), (p, lost) in regret(law, points).items():
        print(f"| {c} | {budget} min | {p['L']}x{p['H']} | {lost:+.4f} |")
    if a.rows:
        for x, p in sorted(zip(res, points), key=lambda q: (q[1]["corpus"], q[1]["budget"])):
            print(f"  {p['corpus']:16} {p['budget']:>3} {p['L']}x{p['H']:<4} d{p['dropout']:<4}"
                  f"{'heavy' if p['heavy'] else '':6} ep {p['D'] / p['U']:7.2f}  loss "
                  f"{p['loss']:.4f}  fit {p['loss'] + x:.4f} ({x:+.4f})")


if __name__ == "__main__":
    main()
