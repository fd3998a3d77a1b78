"""Continuous batching: one thread steps every live generation of a model together.

    scheduler = Scheduler(max_streams=64, max_queue=256)
    job = scheduler.submit(model, Stream(vocab, 500, rng, "ROMEO:"), on_chars, on_end)
    job.cancel()                     # a client that went away: its slot is free at the next step

An LSTM's whole state is a fixed (L, H) per stream, so a step of all live streams is one batched
product per layer per character (sample.Batch). A job joins at the next step and leaves when it
is done, cancelled or past its deadline. The streams of one checkpoint share a Batch; a model
reloaded from a newer checkpoint gets a new Batch, and the old one finishes its streams.
Callbacks run on the scheduler's thread: they must only hand the characters on (the server
passes them to its event loop).
"""

import threading
import time
from collections import deque
from dataclasses import dataclass

from .errors import CharlstmError
from .sample import Batch


# A job's characters go out at once when they are its first, then at most every FLUSH seconds:
# one event per character per client costs the event loop more than the model's step (1 x 640,
# 64 streaming clients: 11,100 chars/s with 0.02, 17,400 with 0.05; benchmarks/serve.py).
FLUSH = 0.05
# The scheduler hands the GIL to the event loop's thread at least this often (seconds): a tiny
# model's step never lets go of it, and Python alone lets a waiting thread in only after 5 ms at
# each of the loop's system calls. Beside one stream of a 1 x 32 model /healthz took 0.2 s and a
# client's leaving 3-26 s to notice; with this, 0.01 s and 0.03 s, and a 1 x 640 model streams
# within 0-4% of its speed before (every 1 ms: 6-8% slower; benchmarks/RESULTS.md).
YIELD = 0.005


@dataclass
class Limits:
    """What one request may ask for, and how much the server takes on (`charlstm serve`'s
    options of the same names)."""
    max_text_bytes: int = 100_000
    max_length: int = 10_000
    max_n: int = 16
    max_beam: int = 16
    max_body: int = 1_000_000
    max_streams: int = 64
    max_queue: int = 256
    timeout: float = 300.0


LIMITS_HELP = {
    "max_text_bytes": "Most bytes of a prime, a text to score or a context.",
    "max_length": "Most characters per completion.",
    "max_n": "Most completions per request.",
    "max_beam": "Most beam-search hypotheses.",
    "max_body": "Most bytes of a request body.",
    "max_streams": "Generation streams stepped together.",
    "max_queue": "Streams that may wait for a slot (past that: 503).",
    "timeout": "Seconds a generation may take.",
}


SHUTTING_DOWN = "the server is shutting down"


def too_long(timeout):
    """How a generation past the server's --timeout ends (a sampled one here, a beam search in
    serve.py)."""
    return f"the request took longer than this server's --timeout ({timeout:g} s)"


class Busy(CharlstmError):
    """Every stream slot and queue place is taken: try again shortly."""


class Job:
    """One stream in the scheduler: on_chars(text) as characters come, on_end(error or None)."""

    def __init__(self, model, stream, on_chars, on_end, deadline):
        self.model, self.stream = model, stream
        self.on_chars, self.on_end, self.deadline = on_chars, on_end, deadline
        self.ended, self.held, self.sent = False, [], None    # held: tokens not yet sent

    def flush(self, now, force=False):
        """Hand on the held characters: the first at once, then every FLUSH seconds."""
        if self.held and (force or self.sent is None or now - self.sent >= FLUSH):
            chars = self.model.vocab.chars
            self.on_chars("".join(chars[t] for t in self.held))
            self.held, self.sent = [], now

    def cancel(self):
        self.stream.cancel()


class Scheduler:
    """Admits jobs up to max_streams live ones (max_queue more wait), and steps them."""

    def __init__(self, max_streams=64, max_queue=256, timeout=None):
        self.max_streams, self.max_queue, self.timeout = max_streams, max_queue, timeout
        self.pending, self.live = deque(), []
        self.batches = {}                 # id(model) -> (model, Batch)
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="charlstm-scheduler", daemon=True)
        self.thread.start()

    def submit(self, model, stream, on_chars, on_end):
        """Queue a stream of `model` (an api.Model); raises Busy when there is no room."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        job = Job(model, stream, on_chars, on_end, deadline)
        with self.cond:
            if self.stopping:
                raise Busy(SHUTTING_DOWN)
            if len(self.pending) + len(self.live) >= self.max_streams + self.max_queue:
                raise Busy(f"all {self.max_streams} streams and {self.max_queue} queue places "
                           "are taken; retry shortly")
            self.pending.append(job)
            self.cond.notify()
        return job

    def load(self):
        """(live streams, queued streams)."""
        with self.cond:
            return len(self.live), len(self.pending)

    def stop(self, wait=True):
        """Cancel every job (each ends with an error saying why) and end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if wait:
            self.thread.join(timeout=10)

    def _loop(self):
        yielded = time.monotonic()
        while True:
            with self.cond:
                while not self.pending and not self.live and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    self._end_all(SHUTTING_DOWN)
                    return
                self._admit()
            self._step()
            if time.monotonic() - yielded >= YIELD:
                time.sleep(0)             # the event loop's turn (YIELD)
                yielded = time.monotonic()

    def _admit(self):
        while self.pending and len(self.live) < self.max_streams:
            job = self.pending.popleft()
            if job.stream.done:           # cancelled while it waited
                self._end(job)
                continue
            key = id(job.model)
            if key not in self.batches:
                self.batches[key] = (job.model, Batch(job.model.params, job.model.start))
            self.batches[key][1].add(job.stream)
            self.live.append(job)

    def _step(self):
        for key, (_, batch) in list(self.batches.items()):
            batch.step()
            if not batch.streams:
                del self.batches[key]
        now = time.monotonic()
        still = []
        for job in self.live:
            job.held += job.stream.take()
            job.flush(now, force=job.stream.done)
            if job.deadline is not None and now > job.deadline and not job.stream.done:
                job.cancel()
                self._end(job, too_long(self.timeout))
            elif job.stream.done:
                self._end(job)
            else:
                still.append(job)
        with self.cond:
            self.live = still

    def _end(self, job, error=None):
        if job.ended:
            return
        job.ended = True
        if error is None and job.stream.cancelled and job.stream.left:
            error = "cancelled"
        job.on_end(error)

    def _end_all(self, why):
        for job in list(self.pending) + self.live:
            self._end(job, why)
        self.pending.clear()
        self.live = []
