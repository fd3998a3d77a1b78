"""The automatic recipe (recipe.py) and `charlstm train --minutes`: its rules on a model machine,
the user's settings winning, its table, and one clear line for every bad budget or text."""

import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from charlstm import recipe
from charlstm.cli import cli
from charlstm.config import config_from_dict, config_to_dict, load_config_keys
from charlstm.data import Vocab
from charlstm.errors import CharlstmError

from helpers import no_internal_error, one_line_error, synthetic_text


class Corpus:
    """A corpus of n characters over a vocabulary of V, without the memory (zeros, broadcast)."""

    def __init__(self, n, V=65):
        self.tokens = np.broadcast_to(np.uint8(0), (n,))
        self.vocab = Vocab([chr(0x21 + i) for i in range(V)])
        self.description = "'text.txt'"


def machine(V, E, H, L, B, T, cell, dropout, device="cpu"):
    """A model of a 2-core machine's step time: 5 ms, plus its matrix products at 30 GFLOP/s."""
    return 0.005 + recipe.matmul_flops_per_char(L, H, V, cell.gates) * B * T / 30e9


def choose(n, minutes, *sets, V=65):
    cfg, explicit = load_config_keys(None, ["data.path=text.txt", f"train.max_minutes={minutes}",
                                            "train.recipe=auto", *sets])
    return recipe.choose(cfg, explicit, Corpus(n, V), timer=machine)


def chosen(choice):
    return {k: v for k, v, _ in choice.rows}


def chosen_why(choice, key):
    return {k: why for k, _, why in choice.rows}[key]


def plans(c, V=65):
    """(layers, width) -> recipe.Plan of the model machine for every net, in the budget `c` was
    given (the loss predicted with the corpus the recipe took the text for)."""
    B, T, n = c.train.batch_size, c.train.seq_len, 0.9 * c.n
    like = recipe.nearest_corpus(recipe.bits_per_char(Corpus(c.n, V)))

    def plan(L, H):
        steps = 60 * c.train.max_minutes / machine(V, 64, H, L, B, T, _lstm(), 0)
        params = recipe.params_of(V, 64, H, L, _lstm())
        core = params - V * 64 - V * H - V
        return recipe.Plan(steps, steps * B * T, steps * B * T / n, params, core,
                           recipe.predicted_loss(L, core, steps * B * T, like))
    return {(L, H): plan(L, H) for L in (1, 2) for H in recipe.WIDTHS}


def sized(n, minutes, V=65):
    c = choose(n, minutes, V=V).cfg
    c.n = n
    return c, plans(c, V), (c.model.num_layers, c.model.hidden_size)


def _lstm():
    from charlstm.cells import Cell
    return Cell("lstm", False, False)


@pytest.mark.parametrize("n, minutes, V", [(50_000_000, 2, 65), (10_000_000, 10, 65),
                                           (1_000_000, 30, 65), (100_000, 60, 65),
                                           (1_000_000, 60, 10_000), (3_000_000, 10, 2)])
def test_the_choice_is_the_net_the_loss_law_predicts_best(n, minutes, V):
    """Of the nets that get MIN_STEPS updates and have at most MAX_PER_CHAR parameters per
    training character: the least predicted loss, whatever the text or the budget."""
    c, plan, chosen = sized(n, minutes, V)
    lo, hi = recipe.FITTED["symbols"]
    fits = {net: p for net, p in plan.items()
            if p.steps >= recipe.MIN_STEPS and p.core <= recipe.MAX_PER_CHAR * 0.9 * n
            and (lo <= V <= hi or net[0] == 1)}          # one layer outside the fitted symbols
    assert chosen == min(fits, key=lambda net: fits[net].loss)
    assert plan[chosen].loss == pytest.approx(
        recipe.LIKE["pycode-50m"][1] + recipe.LIKE["pycode-50m"][2] *
        recipe.law_bracket(chosen[0], plan[chosen].core, plan[chosen].chars))
    two = choose(50_000_000, 10, "model.num_layers=2", V=V).cfg           # unless you say two
    assert two.model.num_layers == 2


@pytest.mark.parametrize("V", [2, 10_000])
def test_a_vocabulary_outside_the_fitted_range_gets_one_layer_unless_you_say_two(V):
    """The law's two-layer terms were fitted on 65-199 symbols: outside that range only one-layer
    nets are timed and chosen, even where the law alone ranks a two-layer net first."""
    c, plan, chosen = sized(1_000_000, 60, V)
    fits = {net: p for net, p in plan.items()
            if p.steps >= recipe.MIN_STEPS and p.core <= recipe.MAX_PER_CHAR * 900_000}
    if V == 10_000:
        assert min(fits, key=lambda net: fits[net].loss)[0] == 2       # the law alone: two
    assert chosen == min((net for net in fits if net[0] == 1), key=lambda net: fits[net].loss)
    choice = choose(1_000_000, 60, V=V)
    assert "2 x" not in choice.timing and re.search(r"1 x \d+ [\d,]+ chars/s", choice.timing)
    assert chosen_why(choice, "model.num_layers").startswith(
        f"one layer: the law's two layers were fitted on texts of 65-199 symbols, not {V:,}; "
        "the width: the loss law's best")
    assert choose(1_000_000, 60, "model.num_layers=2", V=V).cfg.model.num_layers == 2


def test_the_law_rewards_parameters_and_reading_and_two_layers_catch_up_as_they_read():
    law = recipe.law_bracket
    assert law(1, 1e6, 1e7) < law(1, 1e5, 1e7) and law(1, 1e6, 1e8) < law(1, 1e6, 1e7)
    gaps = [law(2, 1e6, d) - law(1, 1e6, d) for d in (1e6, 1e7, 1e8)]
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 0.01


def test_a_short_text_caps_the_parameters_per_character():
    c, plan, chosen = sized(20_000, 60)
    assert plan[chosen].core <= recipe.MAX_PER_CHAR * 18_000
    assert any(p.loss < plan[chosen].loss for p in plan.values())    # a bigger net, left out
    why = {k: why for k, _, why in choose(20_000, 60).rows}["model.num_layers"]
    assert f"over {recipe.MAX_PER_CHAR:g} parameters per character of the text left out" in why


def test_a_text_too_short_for_any_net_gets_the_smallest():
    choice = choose(4_000, 10)
    assert (choice.cfg.model.num_layers, choice.cfg.model.hidden_size) == (1, min(recipe.WIDTHS))
    why = {k: why for k, _, why in choice.rows}["model.num_layers"]
    assert why.startswith("the smallest net: even it has over")


def test_more_time_buys_a_bigger_net():
    sizes = [recipe.params_of(65, 64, c.model.hidden_size, c.model.num_layers, _lstm())
             for c in (choose(10_000_000, minutes).cfg for minutes in (2, 10, 60))]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_the_report_predicts_the_loss_of_the_choice_and_its_neighbours():
    choice = choose(10_000_000, 10)
    line = next(note for note in choice.notes if "predicted validation loss" in note)
    L, H = choice.cfg.model.num_layers, choice.cfg.model.hidden_size
    assert f"for {L} x {H};" in line and "with the floor and scale of pycode-50m" in line
    deltas = [float(d) for d in re.findall(r"\d x \d+ ([-+]\d\.\d+)", line)]
    assert len(deltas) == 3 and min(deltas) >= 0                  # narrower, wider, other depth
    assert not any("extrapolates" in note for note in choice.notes)   # inside the fitted range


@pytest.mark.parametrize("n, minutes, V, said", [
    (20_000, 480, 65, ["20,000 characters", "480 minutes", "fitted: up to 305"]),
    (1_000_000, 10, 10_000, ["10,000 symbols (fitted: 65-199)"]),
    (1_000_000, 1, 65, ["1 minute (fitted: 2-30)"]),
    (500_000_000, 30, 65, ["500,000,000 characters (fitted: 89,600-49,846,154)"])])
def test_the_report_says_where_the_law_extrapolates(n, minutes, V, said):
    notes = " ".join(choose(n, minutes, V=V).report().split())
    assert "the law extrapolates here:" in notes
    for part in said:
        assert part in notes


def test_regularization_follows_the_epochs_and_below_3_the_budget():
    big = choose(50_000_000, 2).cfg.model                      # read less than once
    assert (big.dropout, big.weight_drop) == (0.0, 0.0)
    longer = choose(50_000_000, recipe.DROPOUT_MINUTES)        # still less than once, but longer
    assert (longer.cfg.model.dropout, longer.cfg.model.weight_drop) == (0.1, 0.0)
    assert f"{recipe.DROPOUT_MINUTES} minutes: light dropout" in chosen_why(longer, "model.dropout")
    shorter = choose(50_000_000, recipe.DROPOUT_MINUTES - 1).cfg.model
    assert shorter.dropout == 0.0
    small = choose(100_000, 10)                                # read dozens of times
    m, o = small.cfg.model, small.cfg.optim
    assert (m.dropout, m.dropout_mask, m.weight_drop, o.weight_decay) == (0.25, "window", 0.25, 0.1)
    assert "epochs" in dict((k, why) for k, _, why in small.rows)["model.dropout"]


def test_the_weight_average_spans_a_tenth_of_the_steps_and_an_eighth_when_heavy():
    for n, minutes, share in ((10_000_000, 2, recipe.AVERAGE), (100_000, 2, recipe.AVERAGE_HEAVY)):
        c, plan, net = sized(n, minutes)
        assert (c.model.weight_drop > 0) == (share == recipe.AVERAGE_HEAVY)
        assert c.optim.ema == round(1 - 1 / (share * plan[net].steps), 4)
    assert choose(100_000, 60).cfg.optim.ema == 0.999                   # at most 1,000 steps


def test_the_result_is_a_plain_config_that_saves_and_loads():
    c = choose(2_000_000, 5).cfg
    assert c.train.recipe == "off" and c.train.max_steps is None
    assert 0 < c.train.max_minutes <= 5 and c.train.eval_minutes <= c.train.max_minutes
    assert config_from_dict(config_to_dict(c), "x") == c


def test_a_large_text_gets_a_bounded_validation_split():
    c = choose(50_000_000, 10).cfg
    assert c.data.val_fraction * 50_000_000 == pytest.approx(recipe.VAL_CHARS)
    assert choose(100_000, 10).cfg.data.val_fraction == 0.1


def test_what_the_user_set_wins():
    choice = choose(100_000, 10, "model.hidden_size=200", "model.dropout=0.05", "optim.lr=0.01",
                    "data.val_fraction=0.2")
    c = choice.cfg
    assert (c.model.hidden_size, c.model.dropout, c.optim.lr, c.data.val_fraction) == \
        (200, 0.05, 0.01, 0.2)
    reasons = {k: why for k, _, why in choice.rows}
    assert reasons["model.hidden_size"] == reasons["model.dropout"] == "yours"
    assert c.model.weight_drop == 0.25                         # the rest still chosen


def test_the_report_gives_a_reason_for_each_choice():
    text = choose(1_000_000, 10).report()
    lines = text.splitlines()
    assert lines[0].startswith("timed training steps here for")
    assert any(ln.split()[0] == "model.hidden_size" and "steps read" in ln for ln in lines[1:])
    tail = text.partition("\n  as configs/shakespeare.yaml:")[2]
    assert "lr 0.0035" in tail and "seq_len 50" in tail
    assert all(len(ln) <= 96 for ln in tail.splitlines())


def test_the_timing_comes_off_the_budget():
    def slow(*args):
        import time
        time.sleep(0.3)
        return machine(*args)

    cfg, explicit = load_config_keys(None, ["data.path=t.txt", "train.max_minutes=1",
                                            "train.recipe=auto"])
    choice = recipe.choose(cfg, explicit, Corpus(1_000_000), timer=slow)
    assert choice.seconds >= 0.6
    assert choice.cfg.train.max_minutes == pytest.approx(1 - choice.seconds / 60, abs=1e-3)


@pytest.mark.parametrize("device,timed", [("cpu", (128, 512)), ("cuda", (128, 1024, 2048))])
def test_the_widths_between_and_past_the_timed_ones_are_read_off_lines(device, timed):
    """A CPU times 128 and 512 wide, a GPU 128, 1024 and 2048; the others are read off the line
    between the two timed widths around them (never below the cheaper), or past the last one."""
    asked = []

    def gpu_like(V, E, H, L, B, T, cell, dropout, device):   # flat, then a step up, then flat
        asked.append((L, H))
        return {128: 0.006, 512: 0.009, 1024: 0.008, 2048: 0.010}[H] * L

    cfg, explicit = load_config_keys(None, ["data.path=t.txt", "train.max_minutes=5",
                                            f"train.device={device}"])
    step_time, said, _ = recipe._speeds(recipe._Settings(cfg, explicit), 65, gpu_like)
    assert asked == [(L, H) for L in (1, 2) for H in timed]
    for L in (1, 2):
        flops = lambda H: recipe.matmul_flops_per_char(L, H, 65, 4)
        assert all(step_time[L, H] == pytest.approx(gpu_like(0, 0, H, L, 0, 0, 0, 0, 0))
                   for H in timed)
        for H in (recipe.GPU_WIDTHS if device == "cuda" else recipe.WIDTHS):
            h0 = max(h for h in timed if h <= H)
            h1 = min((h for h in timed if h >= H), default=None)
            t0 = step_time[L, h0]
            if h1 is None:                  # past the last timed width: its line, not cheaper
                assert step_time[L, H] >= t0
            else:
                t1 = step_time[L, h1]
                share = (flops(H) - flops(h0)) / (flops(h1) - flops(h0)) if h1 > h0 else 0
                assert step_time[L, H] == pytest.approx(t0 + share * (t1 - t0), rel=1e-6)


def test_too_short_a_budget_says_how_much_is_needed():
    with pytest.raises(CharlstmError, match=r"only \d+ training steps here .* --minutes \d+"):
        choose(1_000_000, 0.05)


def test_too_short_a_text_says_so():
    with pytest.raises(CharlstmError, match="'text.txt' has 40 characters to train on"):
        choose(45, 10)
    assert choose(1_200, 10).cfg.train.batch_size < 32        # fewer rows, but it trains


def test_no_budget_is_refused():
    cfg, explicit = load_config_keys(None, ["train.recipe=auto"])
    with pytest.raises(CharlstmError, match="needs a time budget: give --minutes N"):
        recipe.choose(cfg, explicit, Corpus(100_000), timer=machine)


# --- through the command line --------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def model_machine(monkeypatch):
    """The command line's recipe times the model machine, not this one: the tests' choices
    then do not depend on how busy the machine running them is."""
    monkeypatch.setattr(recipe, "time_apart", lambda sizes, V, E, B, T, cell, device, windows: {
        (L, H): machine(V, E, H, L, B, T, cell, 0.0, device) for L, H in sizes})


@pytest.mark.parametrize("minutes, said", [("0", "got 0.0"), ("-3", "got -3.0"),
                                           ("nan", "got nan"), ("inf", "got inf"),
                                           ("ten", "'ten' is not a valid float"),
                                           ("1e308", "--minutes 1e+308 (train.max_minutes) is "
                                                     "more than charlstm plans for")])
def test_bad_minutes_are_one_line(tmp_path, minutes, said):
    result = invoke("train", "--data", tmp_path / "x.txt", "--minutes", minutes)
    assert result.exit_code != 0
    no_internal_error(result.output)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and said in lines[0], result.output


def test_a_budget_past_any_plan_is_refused_from_the_config_too(tmp_path):
    """train.max_minutes=1e308 with the recipe on: refused before the timing, not after it as
    "the recipe's choice: train.max_minutes: must be a finite number, got inf"."""
    (tmp_path / "x.txt").write_text(synthetic_text(30_000))
    result = invoke("train", "--data", tmp_path / "x.txt", "--set", "train.recipe=auto",
                    "--set", "train.max_minutes=1e308", "--dry-run")
    one_line_error(result, "--minutes 1e+308 (train.max_minutes)", "at most 1,000,000 minutes")


def test_dry_run_prints_the_choice_and_the_config_and_trains_nothing(tmp_path, monkeypatch,
                                                                     model_machine):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(synthetic_text(30_000))
    result = invoke("train", "--data", "notes.txt", "--minutes", "3", "--dry-run",
                    "--set", "model.hidden_size=64")
    assert result.exit_code == 0, result.output
    head, _, saved = result.output.partition("# the run's config")
    assert "timed training steps here" in head and "model.hidden_size" in head
    cfg = yaml.safe_load(saved.partition("\n")[2])
    assert cfg["model"]["hidden_size"] == 64 and cfg["train"]["recipe"] == "off"
    assert cfg["model"]["dropout"] == 0.25                     # 27,000 characters, many epochs
    assert not (tmp_path / "runs").exists()


def test_a_step_count_of_the_users_below_the_warmup_shortens_the_warmup(tmp_path, monkeypatch,
                                                                         model_machine):
    """--minutes 3 --set train.max_steps=30: the recipe's warmup of 50 steps ended in "the
    recipe's choice: optim.warmup_steps: must be < train.max_steps (30)", a key not the user's."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(synthetic_text(30_000))
    result = invoke("train", "--data", "notes.txt", "--minutes", "3", "--dry-run",
                    "--set", "train.max_steps=30")
    assert result.exit_code == 0, result.output
    assert re.search(r"optim.warmup_steps +3 +a tenth of your train.max_steps \(30\)",
                     result.output), result.output
    cfg = yaml.safe_load(result.output.partition("# the run's config")[2].partition("\n")[2])
    assert cfg["optim"]["warmup_steps"] == 3 and cfg["train"]["max_steps"] == 30


def test_minutes_with_the_recipe_off_is_a_plain_timed_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(synthetic_text(30_000))
    result = invoke("train", "--data", "notes.txt", "--minutes", "4", "--dry-run",
                    "--set", "train.recipe=off")
    assert result.exit_code == 0, result.output
    assert "timed training steps" not in result.output
    saved = yaml.safe_load(result.output.partition("# the run's config")[2].partition("\n")[2])
    assert (saved["train"]["max_minutes"], saved["train"]["recipe"]) == (4.0, "off")
    assert saved["model"]["hidden_size"] == 128                # the defaults, not chosen


def test_resume_takes_no_minutes(tmp_path):
    result = invoke("train", "--resume", tmp_path, "--minutes", "5")
    assert result.exit_code != 0 and "drop CONFIG, --out, --init-from, --minutes" in result.output


def test_no_config_and_no_run_length_means_the_recipe_for_three_minutes(tmp_path, monkeypatch,
                                                                       model_machine):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(synthetic_text(30_000))
    result = invoke("train", "--data", "notes.txt", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{recipe.DEFAULT_MINUTES} minutes of training with settings chosen" in result.output
    saved = yaml.safe_load(result.output.partition("# the run's config")[2].partition("\n")[2])
    assert saved["train"]["max_minutes"] <= recipe.DEFAULT_MINUTES
    fixed = invoke("train", "--data", "notes.txt", "--dry-run", "--set", "train.max_steps=100")
    saved = yaml.safe_load(fixed.output.partition("# the run's config")[2].partition("\n")[2])
    assert (saved["train"]["max_steps"], saved["model"]["hidden_size"]) == (100, 128)
    assert "chosen" not in fixed.output


def test_fine_tuning_takes_no_recipe(tmp_path):
    result = invoke("train", "--data", tmp_path / "x.txt", "--minutes", "5",
                    "--init-from", tmp_path / "a.npz")
    assert result.exit_code == 1 and "--init-from" in result.output and \
        "--set train.max_minutes=N" in result.output, result.output


def test_this_machine_is_timed_for_real():
    """time_step itself: a real step of a small net takes some milliseconds, not zero."""
    from charlstm.cells import Cell
    seconds = recipe.time_step(20, 8, 16, 1, 4, 8, Cell("lstm", False, False), 0.2)
    assert 0 < seconds < 5


def test_the_nets_are_timed_in_a_child_process(monkeypatch):
    """time_apart: time_step's figures for every size asked, measured in another process (so the
    training process never holds the timed nets): this process's time_step is never called."""
    from charlstm.cells import Cell
    monkeypatch.setattr(recipe, "time_step", lambda *a, **k: pytest.fail("timed in this process"))
    got = recipe.time_apart([(1, 16), (2, 24)], 20, 8, 4, 8, Cell("gru", False, False), "cpu")
    assert set(got) == {(1, 16), (2, 24)} and all(0 < s < 5 for s in got.values()), got
    text = np.arange(4 * 9).reshape(4, 9) % 20                   # the text's own windows
    got = recipe.time_apart([(1, 16)], 20, 8, 4, 8, Cell("lstm", False, False), "cpu", text)
    assert 0 < got[1, 16] < 5


def test_the_timing_batch_is_windows_of_the_training_text():
    tokens = np.arange(10_000) % 251
    w = recipe._windows(tokens, 9_000, 32, 50)
    assert w.shape == (32, 51) and w[0, 0] == 0 and w[-1, -1] == tokens[8_999]
    assert all((np.diff(row) % 251 == 1).all() for row in w)      # consecutive characters


def test_a_child_that_cannot_time_is_one_line():
    """A device the child cannot use: its own one-line reason, as it is, not a traceback; a child
    that crashes: its last line, said to come from the timing."""
    from charlstm import backend
    from charlstm.cells import Cell
    try:
        backend.require("cuda")
        pytest.skip("this machine has a GPU")
    except CharlstmError as e:
        reason = str(e)
    with pytest.raises(CharlstmError) as err:
        recipe.time_apart([(1, 16)], 20, 8, 4, 8, Cell("lstm", False, False), "cuda")
    assert str(err.value) == reason
    with pytest.raises(CharlstmError) as err:       # not a net: the child fails unpacking it
        recipe.time_apart([(1,)], 20, 8, 4, 8, Cell("lstm", False, False), "cpu")
    assert str(err.value).startswith("timing training steps (in a child process) failed: "
                                     "ValueError"), err.value
