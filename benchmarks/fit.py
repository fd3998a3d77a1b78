"""Fit the recipe's loss law to the study's runs on the fit corpora; print the constants that
charlstm/recipe.py holds, with the fit's residuals and its range.

    python benchmarks/fit.py                 # the exponent's profile, the law, its range
    python benchmarks/fit.py --rows          # also every point with its fitted loss

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

A data-constrained term (Muennighoff et al., 2023: effective data U (1 + S (1 - exp(-(R-1)/S)))
for R readings of U training characters, S per regularizer) with a cost per regularizer was
tried as well: every S went to infinity and every cost to zero, so up to the study's 300 epochs
(with the heavy set) reading the text again counted as new data, and the runs cannot say what
a regularizer is worth. The recipe keeps its regularization bands (recipe._regularize).

The held-out corpora (benchmarks/heldout.py) take no part here.
"""

import argparse
import bz2
import json
from datetime import date
from pathlib import Path

import numpy as np
import yaml

import corpora
from charlstm.cells import Cell
from charlstm.recipe import params_of

HERE = Path(__file__).resolve().parent
STUDY = HERE / "study"
B, T = 32, 50                      # the recipe's batch and window (recipe.FIXED)
ALPHAS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
SHARED = ("A", "k2", "B", "beta", "m2", "beta2")      # fitted in logs: A, k2, B, m2
LOGGED = {"A", "k2", "B", "m2"}
START = {"A": 30.0, "k2": 1.0, "B": 30.0, "m2": 1.0}
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


def runs(until=LAW_UNTIL):
    """Every run recorded up to the day `until` with the recipe's optimizer on a fit corpus,
    measured from the carried state: dicts of corpus, budget, L, H, N, D, U (training
    characters), loss."""
    out = []
    held = {(h["corpus"], h["budget"], h["name"]): h["loss"]
            for h in map(json.loads, open(STUDY / "heldout.jsonl"))}
    for r in map(json.loads, open(STUDY / "results.jsonl")):
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
        out.append({"corpus": r["corpus"], "budget": r["budget"], "steps": r["steps"],
                    "epochs": r["epochs"], "loss": loss, "model": m})
    for r in map(json.loads, open(STUDY / "targets.jsonl")):
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


def _arrays(points):
    return tuple(np.array([p[k] for p in points], dtype=np.float64)
                 for k in ("L", "N", "D", "loss"))


def _unpack(theta, corpora, alpha):
    n = len(corpora)
    E = dict(zip(corpora, theta[:n]))
    scale = dict(zip(corpora, np.exp(np.concatenate([[0.0], theta[n:2 * n - 1]]))))
    law = {name: float(np.exp(v)) if name in LOGGED else float(v)
           for name, v in zip(SHARED, theta[2 * n - 1:])}
    return E, scale, dict(law, alpha=alpha)


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


def fit(points, alpha):
    """The law with exponent `alpha` fitted to `points`: (E by corpus, s by corpus, law,
    residuals), the best of two starting data exponents. The first corpus's s is 1."""
    corpora_ = sorted({p["corpus"] for p in points})
    ci = np.array([corpora_.index(p["corpus"]) for p in points])
    L, N, D, loss = _arrays(points)

    def residuals(th):
        E, scale, law = _unpack(th, corpora_, alpha)
        Ev = np.array([E[c] for c in corpora_])[ci]
        sv = np.array([scale[c] for c in corpora_])[ci]
        return Ev + sv * bracket(law, L, N, D) - loss

    best = None
    for beta in (0.2, 0.5):
        start = dict(START, beta=beta, beta2=beta)
        theta = np.concatenate([[1.0] * len(corpora_), [0.0] * (len(corpora_) - 1),
                                [np.log(start[k]) if k in LOGGED else start[k] for k in SHARED]])
        with np.errstate(all="ignore"):
            theta, r = _lm(residuals, theta)
        if best is None or np.sum(r ** 2) < np.sum(best[1] ** 2):
            best = (theta, r)
    return (*_unpack(best[0], corpora_, alpha), best[1])


def fit_corpus(law, points):
    """One corpus's E and s with the law's shared constants held: (E, s, residuals)."""
    L, N, D, loss = _arrays(points)
    X = np.stack([np.ones_like(loss), bracket(law, L, N, D)], axis=1)
    coef, *_ = np.linalg.lstsq(X, loss, rcond=None)
    return coef[0], coef[1], X @ coef - loss


def leave_one_out(points, alpha):
    """{corpus: its residuals when the law is fitted without it} (corpora with 3 points or
    more). The recipe needs the ranking within a corpus: these residuals measure it."""
    out = {}
    for c in sorted({p["corpus"] for p in points}):
        mine = [p for p in points if p["corpus"] == c]
        if len(mine) > 2:
            law = fit([p for p in points if p["corpus"] != c], alpha)[2]
            out[c] = fit_corpus(law, mine)[2]
    return out


def regret(law, points):
    """{(corpus, budget): (the point the law ranks first, its loss above the best point's)}:
    how much choosing among a pair's points by the law would have lost."""
    out = {}
    for key in sorted({(p["corpus"], p["budget"]) for p in points}):
        mine = [p for p in points if (p["corpus"], p["budget"]) == key]
        if len(mine) > 2:
            L, N, D, loss = _arrays(mine)
            pick = int(np.argmin(bracket(law, L, N, D)))
            out[key] = (mine[pick], loss[pick] - loss.min())
    return out


def corpus_text(name):
    if name == "tinyshakespeare":
        return (HERE.parent / "data" / "tinyshakespeare" / "input.txt").read_text("utf-8")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", action="store_true", help="every point with its fitted loss")
    ap.add_argument("--until", default=LAW_UNTIL, metavar="YYYY-MM-DD",
                    type=_day,
                    help=f"fit the runs recorded up to this day (default {LAW_UNTIL}: "
                         "recipe.LAW's fit)")
    a = ap.parse_args()
    points = fit_points(a.until)
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
