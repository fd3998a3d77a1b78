"""`charlstm serve`: trained models over HTTP (versioned JSON, Server-Sent Events) and a page.

    app = make_app({"shakespeare": "runs/shakespeare"}, Limits(), token=None)
    serve(["runs/shakespeare"], host="127.0.0.1", port=8000)    # what the command runs

Built on FastAPI and uvicorn (the `serve` extra). Generation streams go through one Scheduler
(batching.py), so many clients share each step; the score, the next-character distribution and
beam search run in worker threads, off the event loop (a beam search stops at --timeout, or when
its client leaves, as a sampled stream does). Models come only from the paths given at
start; a run folder's best.npz is reloaded when training replaces it. Every mistake a request can
make is a 4xx with {"error": one line}.
"""

import asyncio
import hmac
import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import runfolder
from .api import Model
from .batching import SHUTTING_DOWN, Busy, Limits, Scheduler, too_long
from .errors import CharlstmError
from .sample import Stream, check_options, known

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
except ImportError:                       # the serve extra is not installed: serve() says so
    BaseModel = None

STATIC = Path(__file__).parent / "static"
CLIENT_GONE = "the client went away"


class Served:
    """A model served by name: its checkpoint, reloaded when the file is replaced."""

    def __init__(self, name, path, device="cpu"):
        self.name, self.source = name, Path(path)
        self.run_dir = self.source if self.source.is_dir() else None
        self.model = Model.load(path, device)
        self.trouble = None               # why the checkpoint could not be read again, if so

    def current(self):
        """The model as its checkpoint is now. A checkpoint that cannot be read now (its run
        folder emptied, a file that is not a whole checkpoint put in its place) is the server's
        trouble, not the request's: the model in memory is served on, and the log says why once."""
        try:
            if self.run_dir is not None:      # training may have written a new best.npz
                path = runfolder.checkpoint_in(self.run_dir)
                if path != self.model.path:
                    self.model = Model(path, self.model.device)
            self.model = self.model.reloaded()
            self.trouble = None
        except CharlstmError as e:
            if str(e) != self.trouble:
                self.trouble = str(e)
                print(f"charlstm serve: model '{self.name}' is served as loaded: {e}",
                      file=sys.stderr, flush=True)
        return self.model

    def describe(self):
        info = self.current().info
        return {"name": self.name, "cell": info["cell"], "layers": info["layers"],
                "hidden": info["hidden"], "vocab_size": info["vocab_size"],
                "parameters": info["parameters"], "best_val": info["best_val"],
                "run": self.run_dir is not None, "step": info["steps"]}


def named(paths):
    """{name: path}: each checkpoint by its run folder's or file's name, made unique."""
    out = {}
    for p in map(Path, paths):
        base = p.name if p.is_dir() else p.stem
        name, k = base, 1
        while name in out:
            k += 1
            name = f"{base}-{k}"
        out[name] = p
    return out


if BaseModel is not None:
    class _Body(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
        model: str | None = Field(None, description="a served model's name; none: the first")

    class GenerateBody(_Body):
        prime: str | None = Field(None, description="text to continue [checkpoint's default]")
        length: int | None = Field(None, ge=0, description="characters per completion")
        temperature: float | None = Field(None, gt=0)
        top_k: int | None = Field(None, ge=0, description="0 = off")
        top_p: float | None = Field(None, gt=0, le=1, description="1 = off")
        seed: int | None = Field(None, ge=0, description="the same seed gives the same text")
        n: int = Field(1, ge=1, description="completions")
        beam: int = Field(0, ge=0, description="beam search with K hypotheses; 0 = sample")
        argmax: bool = False
        stream: bool = Field(False, description="text/event-stream: chunk events, then done")
        skip_unknown: bool = Field(False, description="drop characters the model does not know")

    class ScoreBody(_Body):
        text: str
        top: int = Field(0, ge=0, le=50, description="the model's top guesses per character")
        skip_unknown: bool = False

    class NextBody(_Body):
        context: str = ""
        top: int = Field(10, ge=1, le=1000)
        skip_unknown: bool = False


class Problem(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class Service:
    """What the endpoints do, apart from the framework: the models, the limits, the scheduler."""

    def __init__(self, paths, limits, device):
        self.limits = limits
        self.models = {name: Served(name, p, device) for name, p in paths.items()}
        self.scheduler = Scheduler(limits.max_streams, limits.max_queue, limits.timeout)

    def pick(self, name):
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise Problem(404, f"no model {name!r} here; this server has: "
                               f"{', '.join(self.models)}")
        return self.models[name]

    def text_cap(self, text, what):
        cap = self.limits.max_text_bytes
        if len(text.encode("utf-8", "surrogatepass")) > cap:
            raise Problem(400, f"{what} is over this server's limit of {cap:,} bytes "
                               "(charlstm serve --max-text-bytes)")

    def too_big(self):
        return Problem(413, f"the request body is over this server's limit of "
                            f"{self.limits.max_body:,} bytes (charlstm serve --max-body)")

    async def read(self, request):
        """The request body, read no further than the limit: a chunked body declares no length,
        and one of gigabytes must not be held in memory to be refused. A client that leaves before
        its body is all sent is answered 499 (nobody reads it), not a traceback in the log."""
        raw = bytearray()
        try:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > self.limits.max_body:
                    raise self.too_big()
        except ClientDisconnect:
            raise Problem(499, "the client went away before sending its whole body") from None
        return bytes(raw)

    def parse(self, raw, kind):
        """A request body (JSON, whatever its content type: `curl -d` works) as `kind`."""
        if len(raw) > self.limits.max_body:
            raise self.too_big()
        try:
            obj = json.loads(raw or b"{}", parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            raise Problem(400, f"the body is not JSON: {str(e)[:80]}") from None
        if not isinstance(obj, dict):
            raise Problem(400, "the body must be a JSON object, e.g. {\"prime\": \"A\"}")
        try:
            return kind.model_validate(obj)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ())) or "body"
            got = "" if first.get("type") == "missing" else f", got {_shown(first.get('input'))}"
            raise Problem(400, f"{where}: {first.get('msg', 'invalid')}{got}") from None

    def metrics(self, name):
        served = self.pick(name)
        if served.run_dir is None:
            raise Problem(404, f"model {name!r} was given as a checkpoint file, not a run folder")
        return _metrics(served.run_dir)

    def score(self, body):
        self.text_cap(body.text, "text")
        s = self.pick(body.model).current().score(body.text, body.top, body.skip_unknown)
        out = {"loss": _num(s.loss), "bpc": _num(s.bpc), "chars": s.chars,
               "surprisal": [_num(v) for v in s.surprisal]}
        if body.top:
            out["guesses"] = [[{"char": ch, "p": p} for ch, p in g] for g in s.guesses]
        return out

    def next(self, body):
        self.text_cap(body.context, "context")
        top = self.pick(body.model).current().next(body.context, body.top, body.skip_unknown)
        return {"distribution": [{"char": ch, "p": p} for ch, p in top]}

    async def generate(self, body, request=None):
        """Completions, or an SSE response with body.stream; beam search in a worker thread,
        sampling in the scheduler's batches."""
        served = self.pick(body.model)
        model = served.current()
        o = _options(body, model, self.limits)
        o["prime"] = known(model.vocab, o["prime"], body.skip_unknown, "prime")
        self.text_cap(o["prime"], "prime")
        tic = time.perf_counter()
        if body.beam:
            try:
                texts = [await self.beam(model, body.beam, o, request)]
            except Problem as e:
                if body.stream and e.status != 499:     # as a sampled stream ends: an event
                    return _sse(_failed(e.message))
                raise
            return _sse(_replay(texts, tic)) if body.stream else _reply(served.name, texts, tic)
        queue = asyncio.Queue()
        jobs = _submit(self.scheduler, model, body, o, queue, asyncio.get_running_loop())
        if body.stream:
            return _sse(_events(jobs, queue, tic))
        return _reply(served.name, await _collect(jobs, queue, request), tic)

    async def beam(self, model, beam, o, request=None):
        """Beam search in a worker thread (the threads score, next and the models' list share).
        It stops at its next step past --timeout (504), once its client has gone (`request`
        disconnects: 499) or when the server shuts down (503): the status and line a sampled
        request ends with (batching.Scheduler, _collect)."""
        from .beam import Stopped, beam_search
        timeout = self.limits.timeout
        deadline = time.monotonic() + timeout if timeout else None
        left = threading.Event()               # set on the event loop, read in the worker
        gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
        if gone is not None:
            gone.add_done_callback(lambda task: task.cancelled() or left.set())

        def should_stop():
            return (left.is_set() or self.scheduler.stopping
                    or (deadline is not None and time.monotonic() > deadline))
        try:
            return await run_in_threadpool(beam_search, model.params, model.vocab, o["length"],
                                           beam, o["prime"], model.start, should_stop)
        except Stopped:
            if left.is_set():
                raise Problem(499, CLIENT_GONE) from None
            if self.scheduler.stopping:
                raise Problem(503, SHUTTING_DOWN) from None
            raise Problem(504, too_long(timeout)) from None
        finally:
            if gone is not None:
                gone.cancel()


def make_app(paths, limits=None, token=None, device="cpu"):
    """The FastAPI app serving {name: checkpoint or run folder}."""
    if BaseModel is None:
        raise CharlstmError("charlstm serve needs FastAPI and uvicorn: pip install "
                            "'charlstm[serve]'")
    if token is not None and not token.strip():
        # `--token "$TOKEN"` with TOKEN unset: the API would be open to anyone who can reach it
        raise CharlstmError("--token is empty; give the token requests must send, or leave "
                            "--token out to serve without one")
    service = Service(paths, limits or Limits(), device)
    app = FastAPI(title="charlstm", version="1", docs_url="/docs", redoc_url=None,
                  on_shutdown=[service.scheduler.stop])
    app.state.scheduler, app.state.models = service.scheduler, service.models

    app.add_middleware(_Guard, token=token, service=service)
    app.add_exception_handler(Problem, lambda request, e: _error(e.status, e.message, e.headers))
    app.add_exception_handler(CharlstmError, lambda request, e: _error(400, str(e)))
    app.add_exception_handler(HTTPException, _framework_error)

    def body(kind):
        async def parse(request: Request):
            return service.parse(await service.read(request), kind)
        return {"body": Depends(parse), "extra": {"requestBody": {"required": True, "content": {
            "application/json": {"schema": kind.model_json_schema()}}}}}

    @app.get("/healthz")
    async def healthz():
        live, queued = service.scheduler.load()
        return {"ok": True, "live": live, "queued": queued}
    # HEAD, as monitors send it: the same answer without its body (one GET in the API's schema)
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/v1/models")
    async def list_models():
        return {"models": await run_in_threadpool(
            lambda: [m.describe() for m in service.models.values()])}

    @app.get("/v1/runs/{name}/metrics")
    async def metrics(name: str):
        return await run_in_threadpool(service.metrics, name)

    score_body, next_body, generate_body = body(ScoreBody), body(NextBody), body(GenerateBody)

    @app.post("/v1/score", openapi_extra=score_body["extra"])
    async def score(b: ScoreBody = score_body["body"]):
        return await run_in_threadpool(service.score, b)      # off the event loop

    @app.post("/v1/next", openapi_extra=next_body["extra"])
    async def next_char(b: NextBody = next_body["body"]):
        return await run_in_threadpool(service.next, b)

    @app.post("/v1/generate", openapi_extra=generate_body["extra"])
    async def generate(request: Request, b: GenerateBody = generate_body["body"]):
        return await service.generate(b, request)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class _Guard:
    """The token and the declared body size, checked before any route. Plain ASGI: a reply
    passes through untouched (Starlette's BaseHTTPMiddleware relays each streamed chunk through
    a queue of its own)."""

    def __init__(self, app, token, service):
        self.app, self.token, self.service = app, token, service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refused = self.check(scope["path"], Headers(scope=scope))
            if refused is not None:
                return await refused(scope, receive, send)
        await self.app(scope, receive, send)

    def check(self, path, headers):
        open_path = path in ("/", "/healthz") or path.startswith("/static/")
        sent = headers.get("authorization")
        if self.token and not open_path and not hmac.compare_digest(    # in constant time
                (sent or "").encode(), f"Bearer {self.token}".encode()):
            if sent is None:
                return _error(401, "this server needs a token: send 'Authorization: Bearer TOKEN'")
            # one given but wrong: "needs a token" alone reads as if none had reached it
            return _error(401, "the token sent is not this server's: send the one given to "
                               "charlstm serve --token, as 'Authorization: Bearer TOKEN'")
        size = headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > self.service.limits.max_body):
            e = self.service.too_big()
            return _error(e.status, e.message)
        return None


def _options(body, model, limits):
    """The request's sampling options, each defaulting as `charlstm sample`'s does (the length
    at most --max-length), checked as it checks them, and held to the server's limits."""
    s = model.config.sample
    o = {"prime": s.prime if body.prime is None else body.prime,
         "length": min(s.length, limits.max_length) if body.length is None else body.length,
         "temperature": s.temperature if body.temperature is None else body.temperature,
         "top_k": s.top_k if body.top_k is None else body.top_k,
         "top_p": s.top_p if body.top_p is None else body.top_p}
    check_options(o["temperature"], o["top_k"], o["top_p"], o["length"])
    for key, value, cap in (("length", o["length"], limits.max_length),
                            ("n", body.n, limits.max_n), ("beam", body.beam, limits.max_beam)):
        if value > cap:
            raise Problem(400, f"{key} {value:,} is over this server's limit of {cap:,} "
                               f"(charlstm serve --max-{key})")
    if body.n > 1 and (body.beam or body.argmax):       # n copies of one text
        raise Problem(400, f"n {body.n:,} with {'beam' if body.beam else 'argmax'}: it gives one "
                           "text; ask for n 1, or sample")
    return o


def _submit(scheduler, model, body, o, queue, loop):
    """n jobs whose characters and ends go to `queue` as (index, text) and (index, None/error)."""
    seeds = np.random.SeedSequence(body.seed).spawn(body.n) if body.n > 1 else [body.seed]
    jobs = []
    try:
        for i, seed in enumerate(seeds):
            stream = Stream(model.vocab, o["length"], np.random.default_rng(seed), o["prime"],
                            o["temperature"], o["top_k"], o["top_p"], body.argmax)
            jobs.append(scheduler.submit(
                model, stream,
                lambda text, i=i: loop.call_soon_threadsafe(queue.put_nowait, ("chars", i, text)),
                lambda error, i=i: loop.call_soon_threadsafe(queue.put_nowait, ("end", i, error))))
    except Busy as e:
        for job in jobs:
            job.cancel()
        raise Problem(503, str(e), {"Retry-After": "1"}) from None
    return jobs


async def _collect(jobs, queue, request=None):
    """The completions, once every job ended; a client that goes away (`request` disconnects)
    frees its slots at once, as a streaming one does."""
    texts, ended = [[] for _ in jobs], 0
    gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    try:
        while ended < len(jobs):
            # the client's leaving first, then what came already (without a wait: the scheduler
            # thread can add characters as fast as a busy event loop takes them one by one)
            item = None if gone is not None and gone.done() else (
                queue.get_nowait() if not queue.empty() else await _next(queue, gone))
            if item is None:
                raise Problem(499, CLIENT_GONE)
            kind, i, value = item
            if kind == "chars":
                texts[i].append(value)
            else:
                ended += 1
                if value is not None:
                    raise Problem(503 if value == SHUTTING_DOWN else 504, value)
    finally:
        if gone is not None:
            gone.cancel()
        for job in jobs:
            job.cancel()                   # a client gone, or an error: free the slots now
    return ["".join(t) for t in texts]


async def _next(queue, gone):
    """The next item of `queue`, or None if `gone` (a task, or None) ends first."""
    if gone is None:
        return await queue.get()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not getter.done():
        getter.cancel()
        return None
    return getter.result()


async def _disconnected(request):
    """Returns when the client has closed the connection (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _events(jobs, queue, tic):
    """SSE: one `chunk` event per batch of characters that came in together, then `done`."""
    chars, ended = 0, 0
    try:
        while ended < len(jobs):
            kind, i, value = await queue.get()
            if kind == "chars":
                pieces = {i: [value]}
                while not queue.empty():          # what else came meanwhile, in one go
                    kind2, j, v2 = queue.get_nowait()
                    if kind2 == "chars":
                        pieces.setdefault(j, []).append(v2)
                    else:
                        ended += 1
                        if v2 is not None:
                            yield _event("error", {"error": v2})
                            return
                for j, parts in pieces.items():
                    text = "".join(parts)
                    chars += len(text)
                    yield _event("chunk", {"index": j, "text": text})
            else:
                ended += 1
                if value is not None:
                    yield _event("error", {"error": value})
                    return
        yield _event("done", {"chars": chars, "seconds": round(time.perf_counter() - tic, 4)})
    finally:
        for job in jobs:
            job.cancel()


async def _replay(texts, tic):
    for i, text in enumerate(texts):
        yield _event("chunk", {"index": i, "text": text})
    yield _event("done", {"chars": sum(map(len, texts)),
                          "seconds": round(time.perf_counter() - tic, 4)})


async def _failed(message):
    yield _event("error", {"error": message})


def _event(kind, data):
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _sse(gen):
    return StreamingResponse(gen, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _reply(name, texts, tic):
    return {"model": name, "completions": texts, "chars": sum(map(len, texts)),
            "seconds": round(time.perf_counter() - tic, 4)}


def _metrics(run_dir, most=2000):
    from .plot import read_metrics
    try:
        train, val = read_metrics(run_dir)
    except CharlstmError:
        return {"train": [], "val": []}
    stride = max(1, len(train) // most)
    return {"train": [[s, loss] for s, _, loss in train[::stride]],
            "val": [[s, loss] for s, _, loss in val]}


async def _framework_error(request, e):
    """The framework's own refusals (no such path or file, a method a path does not take) in
    the server's one form, {"error": one line}, not FastAPI's {"detail": ...}."""
    what = f"{request.method} {request.url.path[:200]}"
    if e.status_code == 404:
        message = f"{what}: no such path here (the API's paths are listed at /docs)"
    elif e.status_code == 405:
        allow = (e.headers or {}).get("Allow") or (e.headers or {}).get("allow")
        allow = allow and ", ".join(sorted(m.strip() for m in allow.split(",")))  # a set's order
        message = f"{what}: method not allowed" + (f"; use {allow}" if allow else "")
    else:
        message = f"{what}: {e.detail}"
    return _error(e.status_code, message, e.headers)


def _shown(value, most=40):
    """A request's value as JSON, cut short: the one named in its error line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):       # brackets nested nearly as deep as json allows
        return f"a JSON {type(value).__name__}"
    return text if len(text) <= most else text[:most] + "..."


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _num(v):
    return None if v is None or not math.isfinite(v) else float(v)


def _error(status, message, headers=None):
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status,
                        headers=headers)


def serve(paths, host="127.0.0.1", port=8000, token=None, limits=None, device="cpu",
          echo=print):
    """Serve the checkpoints or run folders `paths` until SIGINT or SIGTERM; then stop taking
    requests, end the live streams and return."""
    try:
        import uvicorn
    except ImportError:
        raise CharlstmError("charlstm serve needs FastAPI and uvicorn: pip install "
                            "'charlstm[serve]'") from None
    _check_address(host, port)
    app = make_app(named(paths), limits, token, device)
    where = ("loopback only; --host 0.0.0.0 serves every interface"
             if host in ("127.0.0.1", "localhost", "::1") else "reachable from other machines")
    echo(f"serving {', '.join(app.state.models)} on http://{host}:{port} ({where})"
         + ("; requests need the token" if token else ""))
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):    # SIGINT, SIGTERM: live streams end now, with
            app.state.scheduler.stop(wait=False)   # an error event saying why
            super().handle_exit(sig, frame)
            # uvicorn raises the signal again once it has shut down; a stop asked for is a
            # clean exit here (status 0), so it is not re-raised (tested)
            self._captured_signals.clear()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=5, lifespan="on")
    Server(config).run()


def _check_address(host, port):
    """One clear line, before any model loads, when host:port cannot be listened on."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except OSError as e:
        raise CharlstmError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another "
                            "--port (or --host)") from None
