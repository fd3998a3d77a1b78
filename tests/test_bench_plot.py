"""`charlstm bench` and `charlstm plot`: they run, report what they promise, and fail cleanly."""

import builtins
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from charlstm.bench import activation_floats, format_report, matmul_flops_per_char
from charlstm.cli import cli
from charlstm.plot import _smooth, read_metrics

from helpers import no_internal_error, one_line_error


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_flop_count_matches_the_issue_figure():
    # 2 x 512 with 65 characters: about 19 MFLOP per character for forward + backward
    assert matmul_flops_per_char(2, 512, 65) == pytest.approx(19.1e6, rel=0.01)


def test_activation_bound_is_torch_rnns_formula():
    N, T, D, H = 2, 3, 4, 5
    one_layer = N * T * D + 6 * N * T * H + 8 * N * H + 8 * H * H + 8 * D * H + 9 * H
    assert activation_floats(1, H, D, N, T, 7) == one_layer + N * T * 7


def test_bench_json_reports_every_figure():
    result = invoke("bench", "--layers", 1, "--hidden", 16, "--batch", 4, "--seq", 8, "--vocab",
                    10, "--steps", 2, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    for key in ["train_chars_per_sec", "sample_chars_per_sec", "achieved_gflops",
                "machine_gflops", "peak_rss_mb", "eval_chars_per_sec", "forward_ms",
                "backward_ms", "optimizer_ms", "step_memory_mb"]:
        assert r[key] > 0 or key == "step_memory_mb", key
    human = invoke("bench", "--layers", 1, "--hidden", 16, "--batch", 4, "--seq", 8, "--steps", 1)
    assert "chars/s" in human.output and "GFLOP/s" in human.output and "RSS" in human.output


def test_bench_report_shows_a_tiny_nets_small_figures_as_they_are_not_as_zero():
    c = {"layers": 1, "hidden": 16, "batch": 1, "seq": 1, "vocab": 2, "embedding": 0,
         "steps": 1, "device": "cpu", "cell": "lstm"}
    r = {"config": c, "parameters": 1314, "train_chars_per_sec": 5051.0, "step_ms": 0.198,
         "forward_ms": 0.074, "backward_ms": 0.096, "optimizer_ms": 0.029,
         "achieved_gflops": 0.032, "machine_gflops": 170.8, "fraction_of_machine": 0.000187,
         "eval_chars_per_sec": 14496.0, "sample_chars_per_sec": 21504.0, "peak_rss_mb": 81.9,
         "step_memory_mb": 0.38, "activation_bound_mb": 0.0092, "gpu_memory_mb": None}
    report = format_report(r)
    assert "(0.2 ms/step: forward 0.1, backward 0.1, optimizer 0.029)" in report
    assert "matmul:  0.032 GFLOP/s achieved, machine 170.8 GFLOP/s" in report
    assert "(0.019%)" in report
    assert "a step's activations 0.38 MB (torch-rnn's bound: 0.0092 MB)" in report
    r.update(step_memory_mb=0.0, fraction_of_machine=0.25)         # a measured 0 stays 0
    assert "activations 0 MB" in format_report(r) and "(25%)" in format_report(r)


def test_bench_rejects_bad_sizes():
    result = invoke("bench", "--hidden", 0)
    assert result.exit_code == 2 and "--hidden" in result.output
    # too big for memory: one line, naming the options that set the keys it names
    one_line_error(invoke("bench", "--hidden", 99999999, "--layers", 3), "GiB",
                   "--hidden sets model.hidden_size", "--layers sets model.num_layers")
    one_line_error(invoke("bench", "--layers", 10 ** 9), "GiB", "--layers sets model.num_layers")


@pytest.fixture
def run_dir(tmp_path, corpus):
    out = tmp_path / "run"
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_plot_writes_a_png_and_overlays_runs(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke("plot", run_dir)
    assert result.exit_code == 0, result.output
    png = run_dir / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = invoke("plot", run_dir, run_dir, "-o", tmp_path / "both.png")
    assert both.exit_code == 0 and (tmp_path / "both.png").stat().st_size > 1000


def test_plot_writes_the_file_named_in_the_format_its_suffix_names(run_dir, tmp_path):
    """Was: a name without a suffix got ".png" added by matplotlib (so "wrote NAME" named a file
    that was not written, and -o /dev/full wrote /dev/full.png), and an unknown suffix was an
    internal error."""
    pytest.importorskip("matplotlib")
    bare = tmp_path / "curves"
    result = invoke("plot", run_dir, "-o", bare)
    assert result.exit_code == 0 and result.output == f"wrote {bare}\n", result.output
    assert bare.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "curves.png").exists()
    pdf = tmp_path / "curves.PDF"
    assert invoke("plot", run_dir, "-o", pdf).exit_code == 0 and pdf.read_bytes()[:5] == b"%PDF-"
    odd = tmp_path / "curves.jpgx"
    one_line_error(invoke("plot", run_dir, "-o", odd),
                   f"cannot write '{odd}': matplotlib writes no .jpgx files", ".png")
    assert not odd.exists()


@pytest.mark.skipif(shutil.which("xelatex") is not None, reason="needs a machine without LaTeX")
def test_plot_to_a_format_whose_tool_is_missing_is_one_line(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.pgf"
    one_line_error(invoke("plot", run_dir, "-o", out), f"cannot write '{out}'", "xelatex",
                   "name a .png, .pdf or .svg file instead")


def test_plot_without_matplotlib_says_how_to_install(run_dir, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kw)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = invoke("plot", run_dir)
    assert result.exit_code == 1 and "pip install 'charlstm[plot]'" in result.output
    no_internal_error(result.output)


def test_plot_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("plot", tmp_path / "empty")
    assert result.exit_code == 1 and "metrics.jsonl" in result.output
    no_internal_error(result.output)


def bar_average(losses):
    """The training progress bar's running loss after each step (train.py, Run.train_step)."""
    out, avg = [], None
    for loss in losses:
        avg = loss if avg is None else 0.95 * avg + 0.05 * loss
        out.append(avg)
    return out


def test_smoothed_curve_is_the_bar_when_every_step_is_logged():
    losses = list(np.random.default_rng(0).uniform(1.5, 4.5, 300))
    steps = list(range(1, 301))
    assert _smooth(steps, losses) == pytest.approx(bar_average(losses), rel=1e-12)


@pytest.mark.parametrize("steps", [list(range(10, 301, 10)),         # log_every 10
                                   [5, 10, 15, 17, 30, 31, 60]])       # uneven: a resume
def test_smoothed_curve_is_the_bar_where_the_loss_holds_between_logs(steps):
    # The metrics hold one loss per logged step; where the loss was the same on every step since
    # the previous log, the bar's average at each logged step is known exactly.
    logged = list(np.random.default_rng(1).uniform(1.5, 4.5, len(steps)))
    every_step = [logged[np.searchsorted(steps, s)] for s in range(1, steps[-1] + 1)]
    bar = bar_average(every_step)
    assert _smooth(steps, logged) == pytest.approx([bar[s - 1] for s in steps], rel=1e-12)
    assert _smooth(steps, [2.5] * len(steps)) == [2.5] * len(steps)   # no bias towards zero


def test_plot_leaves_out_the_loss_of_skipped_steps(tmp_path):
    records = [{"step": 1, "train_loss": 4.0}, {"step": 2, "skipped": "the loss is inf"},
               {"step": 2, "train_loss": 1e30}, {"step": 3, "train_loss": 3.0},
               {"step": 3, "val_loss": 3.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train, val = read_metrics(tmp_path)
    assert [r[2] for r in train] == [4.0, 3.0] and [r[2] for r in val] == [3.5]


def test_plot_draws_what_it_can_of_a_metrics_file_with_absurd_numbers(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(
        '{"step": 1, "train_loss": 1e308, "train_time": 1.7e308}\n'
        '{"step": 2, "train_loss": Infinity, "train_time": -1e308}\n'
        '{"step": 3, "val_loss": NaN, "train_time": 5}\n'
        '{"step": 1e308, "val_loss": 2.5, "train_time": 5}\n'
        '{"step": 4, "val_loss": 2.0, "train_time": 1e300}\n'
        '{"step": 1%s, "val_loss": 2.5}\n'
        '{"step": 1%s, "val_loss": 2.5}\n' % ("0" * 400, "0" * 5000))
    train, val = read_metrics(tmp_path / "run")
    assert train == [] and val[0][0::2] == (4, 2.0)
    result = invoke("plot", tmp_path / "run", "-o", tmp_path / "loss.png")
    no_internal_error(result.output)
    assert result.exit_code == 0 and (tmp_path / "loss.png").stat().st_size > 0


def test_a_damaged_metrics_file_is_plotted_and_resumed_from_its_sane_lines(run_dir, tmp_path):
    """Bytes that are not UTF-8, brackets nested past the recursion limit, an integer of 5,000
    digits: a damaged metrics.jsonl loses those lines, not the plot or the resume."""
    pytest.importorskip("matplotlib")
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().split(
        "\n")[:-1]) if "train_loss" in r]
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(b"\xff\xfe\x00 garbage\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n"
                + b'{"step": 1' + b"0" * 5000 + b', "train_loss": 2.0}\n')
    train, _ = read_metrics(run_dir)
    assert [r[0] for r in train] == steps
    result = invoke("plot", run_dir, "-o", tmp_path / "loss.png")
    assert result.exit_code == 0, result.output
    result = invoke("train", "--resume", run_dir, "--set", f"train.max_steps={steps[-1] + 10}",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    assert "garbage" not in (run_dir / "metrics.jsonl").read_text()
    assert [r[0] for r in read_metrics(run_dir)[0]][:len(steps)] == steps


@pytest.mark.parametrize("kind", ["a device, pipe or socket", "a folder"])
def test_a_metrics_file_that_is_a_pipe_is_one_clear_line(run_dir, tmp_path, kind):
    (run_dir / "metrics.jsonl").unlink()
    (os.mkfifo if kind != "a folder" else os.mkdir)(run_dir / "metrics.jsonl")
    for args in (["plot", run_dir, "-o", tmp_path / "loss.png"],
                 ["train", "--resume", run_dir, "--set", "train.max_steps=50", "--no-progress"]):
        result = invoke(*args)                   # --resume says "resuming ..." first
        no_internal_error(result.output)
        assert result.exit_code == 1 and result.output.splitlines()[-1].startswith(
            f"Error: '{run_dir / 'metrics.jsonl'}' is not a regular file ({kind}); a run "
            "folder's metrics.jsonl"), result.output


def test_a_plot_stopped_half_way_keeps_the_last_image_whole(run_dir, monkeypatch):
    """Ctrl-C or SIGTERM while the image was written left half of it, in place of the last."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    assert invoke("plot", run_dir).exit_code == 0
    png = run_dir / "loss.png"
    whole = png.read_bytes()

    def stopped(self, target, **kw):
        with open(target, "wb") as f:
            f.write(whole[:100])
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, "savefig", stopped)
    result = invoke("plot", run_dir)
    assert result.exit_code == 130
    assert result.output == "interrupted: exiting now\n"      # no checkpoint to speak of
    assert png.read_bytes() == whole
    assert sorted(p.name for p in run_dir.iterdir() if "loss" in p.name) == ["loss.png"]


def test_a_plot_to_a_link_writes_through_it(run_dir, tmp_path):
    """The temporary file and its rename must not replace a link (-o /dev/stdout) by a file."""
    pytest.importorskip("matplotlib")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    assert invoke("plot", run_dir, "-o", tmp_path / "link.png").exit_code == 0
    assert (tmp_path / "link.png").is_symlink()
    assert (tmp_path / "real.png").read_bytes()[:4] == b"\x89PNG"
