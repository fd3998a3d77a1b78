"""`charlstm serve` under load: aggregate characters per second with 1, 8, 32 and 64 concurrent
streaming clients against the same requests served one at a time, time to first character, and
the server's resident memory over a soak, and how the server answers beside one long stream
(/healthz's time, and how soon a client that leaves frees its slot). Loopback only; every loop is
bounded.

    python benchmarks/serve.py runs/shakespeare            # the 1 x 640 tiny-shakespeare model
    python benchmarks/serve.py runs/tiny --clients 1 --sequential 4 --soak-minutes 0
    python benchmarks/serve.py runs/shakespeare --soak-minutes 5 --json benchmarks/study/serve.json

The clients run in this process (httpx, asyncio) on the same machine as the server, so on 2 cores
they take part of the CPU the server would otherwise have: the figures are a floor.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

try:
    import httpx
except ImportError:                    # said in one line once --help has been answered
    httpx = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import start_server  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def one(client, chars, seed):
    """One streaming request: (characters received, seconds to the first one, seconds)."""
    tic = time.perf_counter()
    first, got = None, 0
    body = {"length": chars, "seed": seed, "stream": True, "temperature": 0.8}
    async with client.stream("POST", "/v1/generate", json=body) as r:
        r.raise_for_status()
        async for block in r.aiter_text():
            for line in block.splitlines():
                if line.startswith("data: ") and '"text"' in line:
                    got += len(json.loads(line[6:])["text"])
                    first = first or time.perf_counter() - tic
                elif line.startswith("event: error"):
                    raise RuntimeError(block)
    return got, first, time.perf_counter() - tic


async def concurrent(url, clients, chars, rounds, seed0=0):
    """`clients` at once, `rounds` times: aggregate chars/s and every time to first character."""
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        total, firsts, tic = 0, [], time.perf_counter()
        for r in range(rounds):
            results = await asyncio.gather(*(one(client, chars, seed0 + r * clients + i)
                                             for i in range(clients)))
            total += sum(g for g, _, _ in results)
            firsts += [f for _, f, _ in results]
        return total / (time.perf_counter() - tic), firsts


async def sequential(url, requests, chars):
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        total, firsts, tic = 0, [], time.perf_counter()
        for i in range(requests):
            got, first, _ = await one(client, chars, 10_000 + i)
            total += got
            firsts.append(first)
        return total / (time.perf_counter() - tic), firsts


async def soak(url, pid, minutes, clients, chars):
    """`clients` streaming request after request for `minutes`; RSS every 10 s."""
    samples, stop = [(0.0, rss_mb(pid))], time.monotonic() + 60 * minutes
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker(k):
            n = 0
            while time.monotonic() < stop:
                await one(client, chars, 50_000 + 1000 * k + n)
                n += 1
            return n

        async def sampler():
            t0 = time.monotonic()
            while time.monotonic() < stop:
                await asyncio.sleep(10)
                samples.append((round(time.monotonic() - t0), rss_mb(pid)))
        done = await asyncio.gather(sampler(), *(worker(k) for k in range(clients)))
    return samples, sum(done[1:])


def beside_a_stream(url, rounds=4, polls=10):
    """One client streams a long request; meanwhile /healthz is asked `polls` times; then the
    client leaves and /healthz is polled until its slot is free. Medians over `rounds`:
    (seconds /healthz took, seconds until the slot was free)."""
    answers, frees = [], []
    with httpx.Client(base_url=url, timeout=60) as probe:
        for _ in range(rounds):
            body = {"length": 1_000_000, "stream": True}
            with httpx.stream("POST", url + "/v1/generate", json=body, timeout=60) as r:
                chunks = r.iter_text()
                next(chunks)
                for _ in range(polls):
                    tic = time.perf_counter()
                    probe.get("/healthz")
                    answers.append(time.perf_counter() - tic)
                    next(chunks)
            left = time.perf_counter()
            while probe.get("/healthz").json()["live"] and time.perf_counter() - left < 60:
                time.sleep(0.01)
            frees.append(time.perf_counter() - left)
    return pct(answers, 50), pct(frees, 50)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="checkpoint or run folder to serve")
    ap.add_argument("--chars", type=int, default=500, help="characters per request")
    ap.add_argument("--sequential", type=int, default=16, help="requests served one at a time")
    ap.add_argument("--soak-minutes", type=float, default=5.0,
                    help="minutes of clients streaming request after request, the server's "
                         "memory sampled (default 5; 0: no soak)")
    ap.add_argument("--soak-clients", type=int, default=32, help="clients in the soak (default 32)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64],
                    help="how many concurrent clients to measure (default 1 8 32 64)")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    for name in ("chars", "sequential", "soak_clients"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give 1 or more")
    if min(args.clients) < 1:
        ap.error("--clients: give 1 or more clients in each measure")
    if not args.soak_minutes >= 0:
        ap.error(f"--soak-minutes {args.soak_minutes}: give 0 (no soak) or more")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        ap.error(f"--json {args.json}: no folder {Path(args.json).parent} to write it in")
    if httpx is None:
        raise SystemExit("serve.py needs httpx, which is not installed here: pip install httpx")
    try:
        server, url = start_server([args.model, "--max-length", "1000000"])
    except AssertionError as e:         # tests/helpers' word for a server that did not start
        said = [line for line in str(e).splitlines() if line.strip()]
        raise SystemExit(f"serve.py: charlstm serve did not start: {said[-1]}") from None
    try:
        model = httpx.get(url + "/v1/models").json()["models"][0]
        asyncio.run(concurrent(url, 4, 50, 1))                       # warm up
        out = {"model": model, "chars": args.chars, "rows": []}
        seq_rate, seq_first = asyncio.run(sequential(url, args.sequential, args.chars))
        healthz, free = beside_a_stream(url)
        out["beside_a_stream"] = {"healthz_s": healthz, "slot_free_s": free}
        out["sequential"] = {"chars_per_sec": seq_rate, "ttfc_p50": pct(seq_first, 50),
                             "ttfc_p99": pct(seq_first, 99)}
        print(f"one at a time: {seq_rate:,.0f} chars/s", file=sys.stderr)
        for clients in args.clients:
            rounds = max(1, 128 // clients) if clients < 64 else 2
            rate, firsts = asyncio.run(concurrent(url, clients, args.chars, rounds))
            row = {"clients": clients, "chars_per_sec": rate, "x_sequential": rate / seq_rate,
                   "ttfc_p50": pct(firsts, 50), "ttfc_p99": pct(firsts, 99),
                   "requests": len(firsts)}
            out["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        if args.soak_minutes > 0:
            samples, requests = asyncio.run(soak(url, server.pid, args.soak_minutes,
                                                 args.soak_clients, args.chars))
            out["soak"] = {"minutes": args.soak_minutes, "clients": args.soak_clients,
                           "requests": requests, "rss_mb": samples,
                           "growth_mb": samples[-1][1] - samples[0][1],
                           "max_growth_mb": max(s for _, s in samples) - samples[0][1]}
    finally:
        server.terminate()
        server.wait(timeout=30)
    m = out["model"]
    print(f"model: {m['name']}, {m['layers']} x {m['hidden']} {m['cell']}, {args.chars} characters "
          "a request, loopback, streaming")
    print("| clients | aggregate chars/s | x one at a time | TTFC p50 ms | TTFC p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    s = out["sequential"]
    print(f"| one at a time | {s['chars_per_sec']:,.0f} | 1.0 | {1e3 * s['ttfc_p50']:.0f} | "
          f"{1e3 * s['ttfc_p99']:.0f} |")
    for r in out["rows"]:
        print(f"| {r['clients']} | {r['chars_per_sec']:,.0f} | {r['x_sequential']:.1f} | "
              f"{1e3 * r['ttfc_p50']:.0f} | {1e3 * r['ttfc_p99']:.0f} |")
    b = out["beside_a_stream"]
    print(f"beside one long stream: /healthz answers in {1e3 * b['healthz_s']:.0f} ms; a client "
          f"that leaves frees its slot in {1e3 * b['slot_free_s']:.0f} ms (medians)")
    if "soak" in out:
        k = out["soak"]
        print(f"soak: {k['minutes']:g} min, {k['clients']} clients, {k['requests']} requests; RSS "
              f"{k['rss_mb'][0][1]:.0f} -> {k['rss_mb'][-1][1]:.0f} MB (most "
              f"{k['max_growth_mb']:+.0f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
