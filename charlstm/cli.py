"""The `charlstm` command: thin click commands that parse options and call the library.

Every error a user can cause is a CharlstmError (or a click usage error) and ends as one line on
stderr with a non-zero exit; `--debug` shows the traceback instead.
"""

import errno
import json
import math
import signal
import sys
import threading
from pathlib import Path

import click
import numpy as np

from . import __version__, api, backend, model, runfolder, runstate
from .cells import Cell
from .config import CELLS, load_config
from .corpus import prepare as prepare_corpus, read_text
from .data import readable
from .distributed import launcher_rank
from .errors import OUT_OF_MEMORY, CharlstmError, Interrupted
from .evaluate import bpc, evaluate, split_tokens
from .sample import PRIME_FILE_BYTES, check_options, known, read_prime


class _Group(click.Group):
    """Turns user errors into one clear line, and any other failure into one line plus a hint."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Interrupted as e:             # stopped cleanly by SIGINT/SIGTERM, checkpoint saved
            _say(str(e))
            ctx.exit(128 + e.signum)
        except KeyboardInterrupt as e:       # Ctrl-C (a second one in training), or SIGTERM
            signum = getattr(e, "signum", signal.SIGINT)
            _say(("interrupted" if signum == signal.SIGINT else f"{signal.Signals(signum).name} "
                  "received") + ": exiting now" + ("; the last complete checkpoint is intact"
                                                  if ctx.invoked_subcommand == "train" else ""))
            ctx.exit(128 + signum)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:              # `charlstm sample ... | head`: quiet, as cat is;
            raise                            # click's main exits 1 without a message
        except Exception as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if launcher_rank() > 0:          # under mpirun, rank 0 alone reports
                ctx.exit(1)
            raise click.ClickException(_breaks_shown(_message(e))) from None


def _message(e):
    if isinstance(e, CharlstmError):
        return str(e)
    if isinstance(e, OSError):
        return (f"{e.strerror or e}" + (f" '{e.filename}'" if e.filename else "")
                + _WHAT_TO_DO.get(e.errno, ""))
    if isinstance(e, MemoryError):
        return OUT_OF_MEMORY
    return (f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback and "
            "please report it)")


# What to do about the system errors a user's files and disks can cause (the rest say only what
# happened, and to which file).
_WHAT_TO_DO = {errno.EACCES: "; check its permissions (and its folder's)",
               errno.EPERM: "; check its permissions (and its folder's)",
               errno.ENOSPC: "; free some disk space, or write elsewhere",
               errno.EDQUOT: "; free some disk space, or write elsewhere",
               errno.EROFS: "; the file system is read-only: write elsewhere"}


def _breaks_shown(message):
    """An error stays one line when a name in it holds a line break (a file called "a\nb")."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _say(message):
    if launcher_rank() == 0:
        click.echo(message, err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charlstm")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Train character-level LSTM language models in NumPy, and sample from them.

    \b
      charlstm train                               # offline demo: Python source
      charlstm train configs/shakespeare.yaml      # your own config
      charlstm sample runs/shakespeare/best.npz --prime "ROMEO:"
    """
    ctx.obj = {"debug": debug}
    # Generated text may hold any character: never fail on a console that is not UTF-8.
    if hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="replace")
        except (ValueError, OSError):
            pass


_DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                       help="Run on the CPU, or on an NVIDIA GPU through CuPy (pip install "
                       "'charlstm[gpu]') [default: cpu; train and bench: the config's "
                       "train.device].")
_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a config key, e.g. --set optim.lr=0.001 (repeatable).")


def _named(ctx, param, value):
    """click.Path takes '' (an unset variable: --out "$DIR"), which would then name the current
    folder: a run's files strewn in it, or (prepare --data) the built-in corpus instead."""
    if value == "":
        raise click.BadParameter("an empty path; give one (is a shell variable unset?)")
    return value


def _progress(default, when):
    return click.option("--progress/--no-progress", default=default,
                        help=f"Show a progress bar, or not (for logs and scripts) "
                        f"[default: {when}].")


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@_SET
@click.option("--data", type=click.Path(), callback=_named, help="Text file, folder or quoted glob "
              "to train on (short for --set data.path=PATH; drops the config's data.url and "
              "data.sha256).")
@click.option("--minutes", type=float, help="Train for N minutes with every setting you did not "
              "set chosen for your text and this machine (short for --set train.max_minutes=N "
              "--set train.recipe=auto; add --set train.recipe=off to choose nothing).")
@click.option("--dry-run", is_flag=True, help="Print the settings the run would use (and with "
              "--minutes, why) and exit.")
@click.option("--out", type=click.Path(file_okay=False), callback=_named, help="Run folder "
              "[default: runs/<config or data name>, or runs/<name>-2, -3, ... if that one holds "
              "a run].")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), callback=_named,
              help="Continue the run in this folder from its last checkpoint.")
@click.option("--init-from", type=click.Path(), callback=_named,
              help="Start a new run from this checkpoint's weights and vocabulary (fine-tuning; "
              "a run folder: its best.npz).")
@_DEVICE
@_progress(True, "shown")
def train(config, overrides, data, minutes, dry_run, out, resume_dir, init_from, device,
          progress):
    """Train a model from a YAML CONFIG (defaults and the built-in corpus if omitted).

    \b
      charlstm train --data notes.txt --minutes 10     # the best model for your text in 10 min
      charlstm train --data notes.txt --minutes 10 --dry-run   # what it would choose, and why
      charlstm train --data notes.txt --minutes 30 --set model.hidden_size=256   # yours wins
      charlstm train configs/tiny.yaml --set train.max_steps=100
      charlstm train configs/shakespeare.yaml --set model.dropout=0.2 --out runs/sh-drop
      charlstm train configs/shakespeare-30min.yaml  # 30 minutes, more regularized
      charlstm train --data notes.txt --set model.weight_drop=0.2 --set optim.ema=0.999
      charlstm train configs/shakespeare.yaml --set model.cell=gru --out runs/sh-gru
      charlstm train configs/shakespeare-gpu.yaml   # 5 minutes on an NVIDIA GPU (CuPy)
      charlstm train configs/shakespeare.yaml --device cuda --out runs/sh-gpu
      charlstm train --resume runs/shakespeare     # continue where it stopped
      charlstm train --data lyrics.txt --init-from runs/shakespeare/best.npz --out runs/lyrics
    """
    result = api.train(config, data=data, minutes=minutes, out=out, overrides=overrides,
                       resume=resume_dir, init_from=init_from, device=device, dry_run=dry_run,
                       progress=progress, echo=click.echo)
    if not result.main:                  # under mpirun, rank 0 alone prints
        return
    if dry_run:
        click.echo("# the run's config (save it as a YAML file to train with it as it is):")
        click.echo(api.config_text(result.config))
    else:
        click.echo(f"done: step {result.steps}, best val loss {result.best_val:.4f} nats/char "
                   f"({bpc(result.best_val):.4f} bits/char)")
        click.echo(f"sample from it with:  charlstm sample {result.best}")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--prime", default=None, help="Text to start from (printed first). Without one, "
              "the model first writes 50-200 characters that are not shown, and the sample "
              "starts after a newline in them, at the beginning of a line.")
@click.option("--length", type=int, default=None, help="Characters to generate after the prime.")
@click.option("--temperature", type=float, default=None,
              help="Below 1: safer, more repetitive; above 1: more surprising.")
@click.option("--top-k", type=int, default=None, help="Draw only from the K most likely "
              "characters (0 = off).")
@click.option("--top-p", type=float, default=None, help="Draw only from the smallest set of "
              "characters whose probability reaches P (nucleus sampling; 1 = off).")
@click.option("--argmax", is_flag=True, help="Always take the most likely character (greedy).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed (>= 0); "
              "the same seed, checkpoint and options give the same text.")
@click.option("--num-samples", type=click.IntRange(min=1), default=1,
              help="Number of independent samples.")
@click.option("--skip-unknown", is_flag=True, help="Drop prime characters that are not in the "
              "model's vocabulary instead of stopping.")
@click.option("--prime-file", type=click.Path(dir_okay=False), help="Start from this UTF-8 "
              f"file's text instead of --prime (at most {PRIME_FILE_BYTES:,} bytes).")
@click.option("--beam", type=click.IntRange(min=0), default=0, help="Beam search with K "
              "hypotheses: the most likely continuation (deterministic; 0 = off, sample).")
@_DEVICE
def sample(checkpoint, prime, length, temperature, top_k, top_p, argmax, seed, num_samples,
           skip_unknown, prime_file, beam, device):
    """Generate text from a CHECKPOINT (or a run folder's best.npz), streaming it.

    Options not given take the values of the checkpoint's `sample` config section. The model
    starts from a state it reached reading its training text (saved in the checkpoint), not
    from the zero state. With no prime, it warms up on a burn-in of its own text, which is not
    printed, and the sample begins after a newline in it: the first line reads like the rest.

    \b
      charlstm sample runs/shakespeare/best.npz --prime "ROMEO:" --temperature 0.8
      charlstm sample runs/python-stdlib --top-p 0.9 --length 2000 --seed 1
      charlstm sample runs/shakespeare --prime-file scene.txt --length 300
      charlstm sample runs/shakespeare --prime "ROMEO:" --beam 8 --length 80
      charlstm sample runs/shakespeare-gpu/best.npz --device cuda
    """
    if num_samples > 1 and (beam or argmax):
        raise click.UsageError(f"{'--beam' if beam else '--argmax'} gives one text; drop "
                               "--num-samples")
    source = "prime"                                  # what a refusal of its characters names
    if prime_file is not None:
        if prime is not None:
            raise click.UsageError("give either --prime or --prime-file, not both")
        prime, source = read_prime(prime_file), f"--prime-file '{prime_file}'"
    model = api.Model.load(checkpoint, device or "cpu")
    s = model.config.sample
    if prime is None:
        prime = s.prime
        source = f"sample.prime in the config of '{model.path}' (--prime replaces it)"
    length = s.length if length is None else length
    temperature = s.temperature if temperature is None else temperature
    top_k = s.top_k if top_k is None else top_k
    top_p = s.top_p if top_p is None else top_p
    check_options(temperature, top_k, top_p, length)
    prime = known(model.vocab, prime, skip_unknown, source)
    rng = np.random.default_rng(seed)                 # one generator: samples differ
    for k in range(num_samples):
        if k:
            click.echo("\n" + "-" * 40)
        click.echo(prime, nl=False)
        for ch in model.stream(prime, length, temperature, top_k, top_p, rng, argmax, beam):
            click.echo(ch, nl=False)
            sys.stdout.flush()
        click.echo()


@cli.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--text", "text_file", type=click.Path(dir_okay=False),
              help="UTF-8 text file to measure the model on.")
@click.option("--split", type=click.Choice(["val", "test"]),
              help="Measure on this split of the data the checkpoint was trained on instead "
              "(refused if those files changed since).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_progress(None, "when stderr is a terminal")
@_DEVICE
def eval_(checkpoint, text_file, split, as_json, progress, device):
    """Measure how well a CHECKPOINT (or a run folder's best.npz) predicts a text: nats and bits
    per character, perplexity.

    Every character after the first is predicted from all that precede it. Long texts are read
    as parallel streams of at least 10,000 characters, each starting from a state the model
    reached reading its training text (saved in the checkpoint). While it runs, a bar
    of characters done shows on stderr when that is a terminal (or with --progress); stdout
    holds the result alone.

    \b
      charlstm eval runs/shakespeare/best.npz --text data/tinyshakespeare/input.txt --json
      charlstm eval runs/shakespeare-gpu --split val --device cuda
      charlstm eval runs/shakespeare/best.npz --text notes.txt --json > notes.json
    """
    if (text_file is None) == (split is None):
        raise click.UsageError("give either --text FILE or --split val|test")
    checkpoint = runfolder.checkpoint_in(checkpoint)
    params, vocab, cfg, meta, start = runstate.load_model(checkpoint, with_start=True)
    params = _on_device(params, device)
    if split:
        tokens = split_tokens(cfg, vocab, split, checkpoint, meta.get("stream"))
        text_file = f"the {split} split of {checkpoint}"
    else:
        text = read_text(text_file, cfg.data.errors, what="text file")
        missing = vocab.missing(text)
        if missing:
            raise CharlstmError(f"'{text_file}' has characters not in the model's vocabulary: "
                                f"{''.join(missing)[:40]!r}")
        tokens = vocab.encode(text)
    if len(tokens) < 2:
        raise CharlstmError(f"{text_file} needs at least 2 characters to predict one")
    if progress is None:                 # a bar in a log file or a pipe is noise
        progress = sys.stderr.isatty()
    loss, chars, streams = evaluate(params, tokens, progress=progress, start=start)
    result = {"loss": loss, "bpc": bpc(loss), "perplexity": math.exp(loss), "chars": chars}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{text_file}: {loss:.4f} nats/char, {bpc(loss):.4f} bits/char, perplexity "
               f"{math.exp(loss):.3f} over {chars:,} character{'' if chars == 1 else 's'}"
               + (f" ({streams} parallel streams)" if streams > 1 else ""))


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@_SET
@click.option("--data", type=click.Path(), callback=_named, help="Text file, folder or glob "
              "(short for --set data.path=PATH; drops the config's data.url and data.sha256).")
@_progress(True, "shown")
def prepare(config, overrides, data, progress):
    """Encode a config's data into its token cache now, instead of at the start of training.

    \b
      charlstm prepare configs/shakespeare.yaml
      charlstm prepare --data 'books/**/*.txt'
    """
    from .corpus import cache_dir
    cfg = load_config(config, list(overrides) + ([f"data.path={data}"] if data else []))
    corpus = prepare_corpus(cfg.data, progress=progress, echo=click.echo)
    click.echo(f"{corpus.description}: {len(corpus.tokens):,} characters, vocabulary "
               f"{len(corpus.vocab)} ({np.dtype(corpus.vocab.dtype).name} tokens)"
               + ("" if cfg.data.path is None else f", cached in {cache_dir(cfg.data)}"))


@cli.command()
@click.argument("checkpoint", type=click.Path())
def info(checkpoint):
    """Describe a CHECKPOINT (or a run folder's best.npz): config, parameter count, progress, best
    val loss, vocabulary.

    Checks the file as `sample` does (its arrays against its config and vocabulary), from its
    metadata alone: no array data is read.

    \b
      charlstm info runs/shakespeare/best.npz
      charlstm info runs/shakespeare
    """
    checkpoint = runfolder.checkpoint_in(checkpoint)
    cfg, vocab, meta = runstate.inspect(checkpoint)
    m = cfg.model
    shapes = model.config_shapes(len(vocab), m)
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    best = meta.get("best_val_loss")
    click.echo(f"checkpoint: {checkpoint} (charlstm {meta.get('charlstm_version', '?')})")
    click.echo(f"model: {m.num_layers} x {m.hidden_size} {Cell.of_config(m).describe()}, "
               f"embedding {m.embedding_size}, {n_params:,} parameters")
    if "step" in meta:                            # a run checkpoint, not weights alone
        done = runstate.epochs(cfg, meta)
        # without a record of its text (older files) the epochs are told as they are stored
        where = (f"epoch {done:.2f}" if done is not None else
                 f"epoch {meta.get('epoch', '?')} + {meta.get('window', '?')} windows")
        click.echo(f"progress: step {meta['step']}, {where}, "
                   f"{meta.get('train_time', 0) / 60:.1f} training minutes")
    click.echo("best val loss: " + ("none yet" if best is None else
                                     f"{best:.4f} nats/char ({bpc(best):.4f} bits/char)"))
    click.echo(f"vocabulary ({len(vocab)}): {readable(vocab.chars)}")
    click.echo("config:")
    click.echo(api.config_text(cfg))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Image to write, in the format its suffix names (.png, .pdf, .svg, ...; PNG "
                   "without one) [default: RUN_DIR/loss.png of the first run].")
def plot(run_dirs, output):
    """Draw train and validation loss of one or more RUN_DIRS against steps and training time.

    Needs matplotlib (pip install 'charlstm[plot]'). Several runs overlay, to compare configs.

    \b
      charlstm plot runs/shakespeare
      charlstm plot runs/sh-small runs/sh-large -o compare.svg
    """
    from .plot import plot_runs
    out = output or str(Path(run_dirs[0]) / "loss.png")
    click.echo(f"wrote {plot_runs(run_dirs, out)}")


# bench's shortcuts: option -> config key
_BENCH_KEYS = {"layers": "model.num_layers", "hidden": "model.hidden_size",
               "batch": "train.batch_size", "seq": "train.seq_len",
               "embedding": "model.embedding_size", "cell": "model.cell",
               "peepholes": "model.peepholes", "coupled_gates": "model.coupled_gates",
               "threads": "train.threads"}


def _shortcut(name, what, shown=None, **kw):
    """`shown`: the value without a CONFIG (bench's own shape); with one, the CONFIG's holds."""
    key = _BENCH_KEYS[name.lstrip("-").replace("-", "_")]
    default = f" [default: {shown}, or the CONFIG's]" if shown else ""
    return click.option(name, help=f"{what}{default} (short for --set {key}=...).", **kw)


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@_SET
@_shortcut("--layers", "Recurrent layers", 2, type=click.IntRange(min=1))
@_shortcut("--hidden", "Hidden size", 512, type=click.IntRange(min=1))
@_shortcut("--batch", "Batch size, parallel streams", 64, type=click.IntRange(min=1))
@_shortcut("--seq", "Characters per window", 100, type=click.IntRange(min=1))
@_shortcut("--embedding", "Embedding size, 0 = one-hot", 64,
           type=click.IntRange(min=0))
@_shortcut("--cell", "The recurrent cell", "lstm", type=click.Choice(CELLS))
@_shortcut("--peepholes", "LSTM with peephole connections", is_flag=True, default=None)
@_shortcut("--coupled-gates", "LSTM with coupled input and forget gates", is_flag=True,
           default=None)
@_shortcut("--threads", "BLAS threads, 0 = the library's default", type=click.IntRange(min=0))
@click.option("--vocab", type=click.IntRange(min=2), default=65, show_default=True,
              help="Vocabulary size of the random tokens.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed training steps (after 2 warm-up steps).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_DEVICE
def bench(config, overrides, vocab, steps, as_json, device, **shortcuts):
    """Time training steps, evaluation and sampling on random tokens; report speed and memory.

    Times the training step of a CONFIG (with --set overrides), the same step `charlstm train`
    takes; without a config, a 2 x 512 LSTM, batch 64, seq 100. Reports training chars/s with
    the forward / backward / optimizer split, the matrix-product GFLOP/s achieved against the
    machine's own rate on a large product, evaluation and sampling chars/s and peak resident
    memory.

    \b
      charlstm bench                                   # 2 x 512, batch 64, seq 100
      charlstm bench configs/shakespeare.yaml          # the step that config trains with
      charlstm bench --layers 2 --hidden 128 --batch 50 --seq 50 --json
      charlstm bench --set model.dropout=0.2 --set optim.ema=0.999
      charlstm bench --device cuda --layers 3 --hidden 1024 --batch 256   # on an NVIDIA GPU
      charlstm bench --cell gru                        # or --cell rnn, --peepholes, --coupled-gates
    """
    from .bench import bench_config, format_report, run_bench
    cell = shortcuts["cell"]
    for option in ("peepholes", "coupled_gates"):
        if shortcuts[option] and cell not in (None, "lstm"):
            flag = "--" + option.replace("_", "-")
            raise click.BadParameter(f"the {cell} cell has no such variant (only lstm has); drop "
                                     f"{flag}, or use --cell lstm", param_hint=flag)
    sets = list(overrides) + [f"{_BENCH_KEYS[name]}={str(v).lower()}"
                              for name, v in shortcuts.items() if v is not None]
    sets += [f"train.device={device}"] if device else []
    try:
        result = run_bench(bench_config(config, sets), vocab=vocab, steps=steps)
    except CharlstmError as e:               # say which options set the keys it names
        named = [f"--{n.replace('_', '-')} sets {_BENCH_KEYS[n]}" for n, v in shortcuts.items()
                 if v is not None and _BENCH_KEYS[n] in str(e)]
        raise CharlstmError(f"{e} ({', '.join(named)})" if named else str(e)) from None
    click.echo(json.dumps(result) if as_json else format_report(result))


def _limits(command):
    """serve's --max-... and --timeout options, one per serve.Limits field, its default shown."""
    from dataclasses import fields

    from .batching import LIMITS_HELP, Limits
    for f in reversed(fields(Limits)):
        real = f.type in (float, "float")
        kind = (click.FloatRange(min=0, min_open=True) if real
                else click.IntRange(min=0 if f.name == "max_queue" else 1))
        command = click.option("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                               show_default=True, help=LIMITS_HELP[f.name],
                               callback=_not_nan if real else None)(command)
    return command


def _not_nan(ctx, param, value):
    """FloatRange lets nan through (no comparison with it is true): --timeout nan was taken, and
    no generation ever timed out."""
    if value != value:
        raise click.BadParameter("nan is not a number; give one > 0")
    return value


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="Port to listen on.")
@click.option("--token", default=None, help="Require 'Authorization: Bearer TOKEN' on every "
              "API request.")
@_DEVICE
@_limits
def serve(models, host, port, token, device, **limits):
    """Serve MODELS (checkpoints or run folders) over HTTP: a JSON API and a page.

    Each model is named after its run folder or file. Open http://127.0.0.1:8000/ for the page
    (generate, score, write with the top next characters, a run's loss curves); the API is
    described at /docs. A run folder's best.npz is reloaded whenever training replaces it.
    Needs the serve extra (pip install 'charlstm[serve]'). Ctrl-C stops it.

    \b
      charlstm serve runs/shakespeare
      charlstm serve runs/shakespeare runs/python-stdlib --port 8080 --token s3cret
      curl -s localhost:8000/v1/generate -d '{"prime": "ROMEO:", "length": 200, "seed": 1}'
    """
    from .batching import Limits
    from .serve import serve as run_server
    run_server(models, host, port, token, Limits(**limits), device or "cpu", echo=click.echo)


def _on_device(params, device):
    """A checkpoint's parameters (host arrays) on `device`; one clear line if it is not usable."""
    if device in (None, "cpu"):
        return params
    backend.require(device)
    return {name: backend.to_device(p, device) for name, p in params.items()}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process stands so that it unwinds as Ctrl-C does."""

    signum = signal.SIGTERM


def _sigterm(signum, frame):
    raise _Terminated


def main():
    # By default SIGTERM ends the process where it stands: no `finally` runs (a half-built token
    # cache's temporary file stayed, a timing child lived on) and nothing is said. Training and
    # serve put their own handlers in place while they run, and restore this one after.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)
    cli(prog_name="charlstm")
