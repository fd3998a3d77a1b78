"""The PyTorch baseline of the performance table in benchmarks/RESULTS.md (developers only; torch
is never a charlstm dependency): Embedding -> nn.LSTM (or nn.GRU, nn.RNN with --cell) -> Linear
with Adam and gradient clipping, float32, timed the way `charlstm bench` times charlstm.

    pip install torch==2.13.0        # into a scratch virtualenv
    python benchmarks/torch_reference.py --layers 2 --hidden 512 --batch 64 --seq 100 --json
    python benchmarks/torch_reference.py --cell gru --layers 2 --hidden 128 --batch 50 --seq 50
    python benchmarks/torch_reference.py --device cuda --layers 3 --hidden 1024 --batch 256

On cuda, nn.LSTM runs cuDNN's fused LSTM; --tf32 on|off sets whether cuDNN and cuBLAS may use
TF32 tensor cores for float32 (PyTorch's default lets cuDNN use them).
"""

import argparse
import json
import sys
import time

try:
    import torch
except ImportError:                    # developers only: say so in one line
    sys.exit("torch_reference.py needs PyTorch, which is not installed here: pip install torch "
             "(into a scratch virtualenv; never a charlstm dependency)")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


CELLS = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}   # nn.RNN: tanh


def train_rate(layers, hidden, batch, seq, vocab, embedding, steps, warmup=2, device="cpu",
               cell="lstm"):
    emb = torch.nn.Embedding(vocab, embedding).to(device)
    rnn = CELLS[cell](embedding, hidden, layers, batch_first=True).to(device)
    head = torch.nn.Linear(hidden, vocab).to(device)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    times = []
    for i in range(warmup + steps):
        sync(device)
        tic = time.perf_counter()
        out, _ = rnn(emb(x))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    times.sort()
    return batch * seq / times[len(times) // 2], (emb, rnn, head)


@torch.no_grad()
def sample_rate(emb, rnn, head, chars=500):
    tok, state = torch.zeros(1, 1, dtype=torch.long, device=head.weight.device), None
    for i in range(chars + 20):
        if i == 20:
            tic = time.perf_counter()
        out, state = rnn(emb(tok), state)
        p = torch.softmax(head(out[0, -1]), -1)
        tok = torch.multinomial(p, 1).view(1, 1)
    return chars / (time.perf_counter() - tic)


def positive(text):
    """An argparse type: a whole number, 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give 1 or more")
    return value


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    for name, default, what in [("layers", 2, "layers"), ("hidden", 512, "hidden size"),
                                ("batch", 64, "batch size"), ("seq", 100, "window length"),
                                ("vocab", 65, "vocabulary size"),
                                ("embedding", 64, "embedding size"),
                                ("steps", 10, "steps timed, after 2 warmup steps"),
                                ("threads", 2, "CPU threads")]:
        ap.add_argument(f"--{name}", type=positive, default=default,
                        help=f"{what} (default {default})")
    ap.add_argument("--no-mkldnn", action="store_true", help="turn oneDNN off")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where to run (default cpu; cuda: cuDNN's fused cells)")
    ap.add_argument("--cell", choices=list(CELLS), default="lstm",
                    help="the cell (default lstm; rnn: nn.RNN, tanh)")
    ap.add_argument("--tf32", choices=["on", "off"], default="on",
                    help="cuda: let cuDNN and cuBLAS use TF32 for float32 (PyTorch's cuDNN default)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: this torch finds no CUDA GPU (torch.cuda.is_available() is "
                 "False); use --device cpu")
    torch.set_num_threads(a.threads)
    if a.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "on"
    rate, modules = train_rate(a.layers, a.hidden, a.batch, a.seq, a.vocab, a.embedding, a.steps,
                               device=a.device, cell=a.cell)
    result = {"train_chars_per_sec": rate, "sample_chars_per_sec": sample_rate(*modules),
              "torch": torch.__version__, "threads": a.threads, "mkldnn": not a.no_mkldnn,
              "device": a.device, "tf32": a.tf32 if a.device == "cuda" else None,
              "cell": a.cell}
    print(json.dumps(result) if a.json else result)


if __name__ == "__main__":
    main()
