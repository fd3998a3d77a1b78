"""Using a trained model: charlstm.Model, `charlstm sample`'s new options, and `charlstm serve`
(the HTTP contract through the framework's test client; batching, streaming and signals on a real
server on a loopback port)."""

import asyncio
import json
import math
import shutil
import signal
import time

import httpx
import numpy as np
import pytest

import charlstm
from charlstm import model as net
from charlstm.errors import CharlstmError
from charlstm.sample import MIN_ROWS, Stream, draw, draw_rows, next_distribution

from helpers import free_port, invoke, one_line_error, served, start_server, tiny_run



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def tiny(run_dir):
    return charlstm.Model.load(run_dir)


# --- the Python API -----------------------------------------------------------------------------

def test_a_model_loads_from_a_run_folder_or_a_checkpoint(run_dir, tiny):
    assert tiny.path == run_dir / "best.npz"
    info = tiny.info
    assert info["layers"] == 1 and info["vocab_size"] == len(tiny.vocab) and info["steps"] > 0
    assert info["parameters"] == sum(p.size for p in tiny.params.values())
    assert 0 < info["best_val"] < math.log(len(tiny.vocab))
    assert tiny.config.model.hidden_size == info["hidden"]
    assert charlstm.Model.load(run_dir / "last.npz").path.name == "last.npz"
    with pytest.raises(CharlstmError, match="holds no checkpoint"):
        charlstm.Model.load(run_dir.parent)


def test_generate_is_charlstm_sample(run_dir, tiny):
    """The same seed and options: the same text from the API and from the command."""
    text = tiny.generate("the ", 120, temperature=0.8, top_p=0.95, seed=7)
    result = invoke("sample", run_dir, "--prime", "the ", "--length", 120, "--temperature", 0.8,
                    "--top-p", 0.95, "--seed", 7)
    assert result.exit_code == 0, result.output
    assert result.output == text + "\n" and text.startswith("the ") and len(text) == 124
    assert "".join(tiny.stream("the ", 120, temperature=0.8, top_p=0.95, seed=7)) == text[4:]
    assert tiny.generate("the ", 120, seed=8) != tiny.generate("the ", 120, seed=7)
    assert tiny.generate(length=60, seed=3) == tiny.generate(length=60, seed=3)


def test_beam_from_the_api_and_the_command(run_dir, tiny):
    text = tiny.generate("the ", 40, beam=4)
    assert len(text) == 44 and text == tiny.generate("the ", 40, beam=4, seed=9)
    result = invoke("sample", run_dir, "--prime", "the ", "--length", 40, "--beam", 4)
    assert result.output == text + "\n"
    greedy = tiny.generate("the ", 40, argmax=True)
    assert tiny.generate("the ", 40, beam=1) == greedy


def oracle_surprisal(m, text):
    """-log p of each character after "\\n" + the text before it, one model.step at a time."""
    prep = net.prepare_step(m.params)
    h, c = (np.repeat(s[:, :1], MIN_ROWS, axis=1).astype(np.float32) for s in m.start)
    out, prev = [], m.vocab.encode("\n")[0]
    for tok in m.vocab.encode(text):
        z = net.step(prep, np.array([prev] * MIN_ROWS), h, c)[0].astype(np.float64)
        out.append(math.log(np.exp(z - z.max()).sum()) + z.max() - z[tok])
        prev = tok
    return np.array(out)


def test_score_and_next_agree_with_stepping_the_model(tiny):
    text = "the cat sat on a mat\nand dog ran far"
    s = tiny.score(text, top=3)
    np.testing.assert_allclose(s.surprisal, oracle_surprisal(tiny, text), rtol=1e-4, atol=1e-4)
    assert s.chars == len(text) and s.loss == pytest.approx(s.surprisal.mean())
    assert s.bpc == pytest.approx(s.loss / math.log(2))
    assert len(s.guesses) == len(text) and all(len(g) == 3 for g in s.guesses)
    i = 7                                        # the model's guesses there are next()'s
    assert [ch for ch, _ in s.guesses[i]] == [ch for ch, _ in tiny.next(text[:i], top=3)]
    dist = tiny.next("the ca", top=len(tiny.vocab))
    ps = [p for _, p in dist]
    assert ps == sorted(ps, reverse=True) and sum(ps) == pytest.approx(1, abs=1e-4)
    there = dict(tiny.next(text[:i], top=len(tiny.vocab)))
    assert there[text[i]] == pytest.approx(math.exp(-s.surprisal[i]), rel=1e-4)
    assert tiny.next("the ca", top=1)[0][0] == tiny.generate("the ca", 1, argmax=True)[-1]


def test_unknown_characters_are_an_error_or_skipped(tiny):
    with pytest.raises(CharlstmError, match="not in the model's vocabulary.*skip_unknown=True "
                                            "in Python"):
        tiny.generate("the é", 5)
    assert tiny.generate("the é", 5, seed=1, skip_unknown=True) == tiny.generate("the ", 5, seed=1)
    with pytest.raises(CharlstmError, match="text has characters"):
        tiny.score("ünknown")
    skipped = tiny.score("the üdog", skip_unknown=True, top=2)
    assert skipped.chars == len("the dog") and len(skipped.surprisal) == len("the üdog")
    assert np.isnan(skipped.surprisal[4]) and skipped.guesses[4] == []
    kept = tiny.score("the dog", top=2)
    np.testing.assert_array_equal(np.delete(skipped.surprisal, 4), kept.surprisal)


@pytest.mark.parametrize("call,message", [
    (lambda m: m.generate(5, 10), "--prime must be a string, got int 5"),
    (lambda m: m.generate(b"the", 10), "--prime must be a string, got bytes b'the'"),
    (lambda m: list(m.stream(None, 10)), "--prime must be a string, got NoneType None"),
    (lambda m: m.generate("the", 10, top_k=2.5), "--top-k must be a whole number >= 0, got 2.5"),
    (lambda m: m.generate("the", 10, temperature="0.8"), "--temperature must be a number > 0"),
    (lambda m: m.generate("the", None), "--length must be a whole number >= 0, got None"),
    (lambda m: m.generate("the", 10, seed=-1), "seed must be a whole number >= 0 or None, got -1"),
    (lambda m: m.generate("the", 10, seed="x"), "seed must be a whole number >= 0 or None, "
                                                "got 'x'"),
    (lambda m: m.generate("the", 10, seed=1.5), "seed must be a whole number >= 0 or None"),
    (lambda m: m.generate("the", 10, beam=2.5), "--beam must be a whole number >= 1, got 2.5"),
    (lambda m: m.generate("the", 2.5, beam=2), "--length must be a whole number >= 0, got 2.5"),
    (lambda m: m.score(5), "text must be a string, got int 5"),
    (lambda m: m.score("the cat", top=-1), "top must be a whole number >= 0, got -1"),
    (lambda m: m.score("the cat", top=2.5), "top must be a whole number >= 0, got 2.5"),
    (lambda m: m.next(None), "context must be a string, got NoneType None"),
    (lambda m: m.next("the", top=-2), "top must be a whole number >= 0, got -2"),
    (lambda m: m.next("the", top="3"), "top must be a whole number >= 0, got '3'"),
])
def test_a_wrong_type_or_value_from_python_is_one_clear_error(tiny, call, message):
    """Model's documented arguments, misused: CharlstmError naming the argument and the value
    (they were TypeErrors from deep inside, "'int' object is not iterable" or "slice indices
    must be integers", NumPy's ValueError "expected non-negative integer" for seed=-1, and a
    negative top quietly cut that many off the list)."""
    with pytest.raises(CharlstmError) as e:
        call(tiny)
    assert str(e.value).startswith(message), str(e.value)
    assert tiny.generate("the", 5, seed=np.random.default_rng(1)) == tiny.generate("the", 5,
                                                                                  seed=1)


def test_a_prime_from_a_file(run_dir, tmp_path):
    (tmp_path / "prime.txt").write_text("the cat", encoding="utf-8")
    out = invoke("sample", run_dir, "--prime-file", tmp_path / "prime.txt", "--length", 10,
                 "--seed", 1)
    assert out.exit_code == 0 and out.output.startswith("the cat")
    assert out.output == invoke("sample", run_dir, "--prime", "the cat", "--length", 10,
                                "--seed", 1).output
    (tmp_path / "bad.txt").write_bytes(b"the \xff cat")
    bad = invoke("sample", run_dir, "--prime-file", tmp_path / "bad.txt")
    one_line_error(bad, "prime file", "bad.txt", "offset 4", "fix the file")
    assert "data.errors" not in bad.output          # sample has no such key to set
    one_line_error(invoke("sample", run_dir, "--prime-file", "/dev/zero"),
                   "prime file '/dev/zero' is not a regular file")
    (tmp_path / "big.txt").write_text("a" * 1_000_001)
    one_line_error(invoke("sample", run_dir, "--prime-file", tmp_path / "big.txt"),
                   "1,000,001 bytes")
    one_line_error(invoke("sample", run_dir, "--prime-file", tmp_path / "nope.txt"),
                   "prime file", "not found")
    both = invoke("sample", run_dir, "--prime", "a", "--prime-file", tmp_path / "prime.txt")
    assert both.exit_code == 2 and "either --prime or --prime-file" in both.output


def test_batched_draws_are_the_one_stream_draws():
    """Batch's vectorized draw (draw_rows) against the one-row path, bit for bit."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((64, 67)) * 4).astype(np.float32)
    temps = rng.uniform(0.3, 2.0, 64)

    class S:                                     # a Stream's sampling fields
        def __init__(self, t, seed):
            self.temperature, self.rng = t, np.random.default_rng(seed)
    rows = draw_rows(logits, [S(t, i) for i, t in enumerate(temps)])
    alone = [draw(next_distribution(logits[i], temps[i]), np.random.default_rng(i))
             for i in range(64)]
    assert rows == alone


def test_a_stream_alone_and_among_many(tiny):
    """The same seeded stream in a Batch of 1 and of 40 (others join and leave): same tokens."""
    from charlstm.sample import Batch

    def run(n_others):
        batch = Batch(tiny.params, tiny.start)
        mine = Stream(tiny.vocab, 80, np.random.default_rng(5), "the ", temperature=0.9)
        others = [Stream(tiny.vocab, 10 + 3 * i, np.random.default_rng(100 + i), "a" * (i % 4),
                         top_k=i % 3, argmax=i % 7 == 0) for i in range(n_others)]
        for s in others[:n_others // 2]:
            batch.add(s)
        batch.add(mine)
        out, steps = [], 0
        while not mine.done:
            if steps == 5:
                for s in others[n_others // 2:]:
                    batch.add(s)
            batch.step()
            out += mine.take()
            steps += 1
        return out
    assert run(0) == run(40)


def test_a_cancel_during_a_step_is_kept(tiny):
    """The server cancels from its event loop while the scheduler thread steps: a cancel that
    lands after the batch checked `done` and before the stream takes its token still ends it."""
    stream = Stream(tiny.vocab, 1000, np.random.default_rng(0))
    logits = np.zeros(len(tiny.vocab.chars))
    stream.after(logits)                         # past the burn-in's first draw
    stream.burning = 0
    stream.cancel()                              # the other thread, mid-step
    stream.after(logits)                         # the step goes on with the token it drew
    assert stream.done and stream.cancelled and stream.left == 999


# --- the HTTP contract, through the test client ------------------------------------------------

@pytest.fixture(scope="module")
def client(run_dir):
    from fastapi.testclient import TestClient

    from charlstm.serve import Limits, make_app
    file_model = run_dir.parent / "file.npz"
    shutil.copy(run_dir / "best.npz", file_model)
    app = make_app({"tiny": run_dir, "file": file_model}, Limits(max_length=300, max_n=4,
                                                                 max_text_bytes=2000,
                                                                 max_body=5000))
    with TestClient(app) as c:
        yield c


def error(response, status, *words):
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"], body
    for w in words:
        assert w in body["error"], (w, body)


def test_models_and_health(client, tiny):
    assert client.get("/healthz").json()["ok"] is True
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["tiny", "file"]
    m = models[0]
    assert (m["layers"], m["hidden"], m["vocab_size"], m["run"]) == (1, 32, len(tiny.vocab), True)
    assert m["best_val"] == pytest.approx(tiny.info["best_val"]) and models[1]["run"] is False
    assert "/v1/generate" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def served_text(m, prime, length, seed, **options):
    """What the server generates for one request: a Stream in a Batch of MIN_ROWS rows."""
    from charlstm.sample import Batch
    batch = Batch(m.params, m.start)
    stream = Stream(m.vocab, length, np.random.default_rng(seed), prime, **options)
    batch.add(stream)
    out = []
    while not stream.done:
        batch.step()
        out += stream.take()
    return "".join(m.vocab.chars[t] for t in out)


def test_generate_over_http_is_the_library(client, tiny):
    body = {"prime": "the ", "length": 50, "seed": 3, "temperature": 0.7}
    r = client.post("/v1/generate", json=body).json()
    assert r["model"] == "tiny" and r["chars"] == 50
    assert r["completions"] == [served_text(tiny, "the ", 50, 3, temperature=0.7)]
    assert client.post("/v1/generate", json={**body, "model": "file"}).json()["completions"] == \
        r["completions"]
    three = client.post("/v1/generate", json={**body, "n": 3}).json()["completions"]
    assert len(three) == 3 and len(set(three)) == 3
    assert three == client.post("/v1/generate", json={**body, "n": 3}).json()["completions"]
    beam = client.post("/v1/generate", json={"prime": "the ", "length": 30, "beam": 3}).json()
    assert beam["completions"] == [tiny.generate("the ", 30, beam=3)[4:]]
    raw = client.post("/v1/generate", content=json.dumps(body))     # any content type: curl -d
    assert raw.json()["completions"] == r["completions"]


def test_generate_streams_events(client, tiny):
    body = {"prime": "the ", "length": 120, "seed": 4, "stream": True, "n": 2}
    with client.stream("POST", "/v1/generate", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(r.iter_text())
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"chunk"}
    texts = ["", ""]
    for kind, data in events[:-1]:
        texts[data["index"]] += data["text"]
    plain = client.post("/v1/generate", json={**body, "stream": False}).json()["completions"]
    assert texts == plain and events[-1][1]["chars"] == 240


def parse_sse(lines_or_text):
    text = "".join(lines_or_text)
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_score_and_next_over_http(client, tiny):
    s = client.post("/v1/score", json={"text": "thé", "skip_unknown": True}).json()
    assert s["chars"] == 2 and s["surprisal"][2] is None and len(s["surprisal"]) == 3
    s = client.post("/v1/score", json={"text": "the cat", "top": 2}).json()
    ref = tiny.score("the cat", top=2)
    assert s["chars"] == 7 and s["loss"] == pytest.approx(ref.loss)
    assert s["surprisal"] == pytest.approx(list(ref.surprisal))
    assert [[g["char"] for g in row] for row in s["guesses"]] == \
        [[ch for ch, _ in row] for row in ref.guesses]
    d = client.post("/v1/next", json={"context": "the c", "top": 3}).json()["distribution"]
    assert [(x["char"], pytest.approx(x["p"])) for x in d] == tiny.next("the c", top=3)


@pytest.mark.parametrize("path,body,status,words", [
    ("/v1/generate", "{bad json", 400, ["not JSON"]),
    ("/v1/generate", '{"length": NaN}', 400, ["NaN"]),
    ("/v1/generate", '{"temperature": Infinity}', 400, ["Infinity"]),
    ("/v1/generate", '{"temperature": 1e999}', 400, ["temperature"]),
    ("/v1/generate", "[1, 2]", 400, ["JSON object"]),
    ("/v1/generate", '{"length": "5"}', 400, ["length", "integer"]),
    ("/v1/generate", '{"length": -1}', 400, ["length"]),
    ("/v1/generate", '{"length": 301}', 400, ["--max-length"]),
    ("/v1/generate", '{"n": 5}', 400, ["--max-n"]),
    ("/v1/generate", '{"beam": 17}', 400, ["--max-beam"]),
    ("/v1/generate", '{"beam": 2, "n": 3}', 400, ["n 3 with beam: it gives one text"]),
    ("/v1/generate", '{"argmax": true, "n": 2}', 400, ["n 2 with argmax: it gives one text"]),
    ("/v1/generate", '{"top_p": 0}', 400, ["top_p"]),
    ("/v1/generate", '{"temperature": 0}', 400, ["temperature"]),
    ("/v1/generate", '{"seed": -2}', 400, ["seed"]),
    ("/v1/generate", '{"prime": "é"}', 400, ["vocabulary", "skip"]),
    ("/v1/generate", '{"model": "nope"}', 404, ["nope", "tiny, file"]),
    ("/v1/generate", '{"colour": "red"}', 400, ["colour"]),
    ("/v1/generate", '{"prime": "' + "a" * 2001 + '"}', 400, ["--max-text-bytes"]),
    ("/v1/score", "{}", 400, ["text"]),
    ("/v1/score", '{"text": "the ü"}', 400, ["vocabulary"]),
    ("/v1/next", '{"top": 0}', 400, ["top"]),
    ("/v1/next", '{"context": 5}', 400, ["context"]),
    ("/v1/runs/file/metrics", None, 404, ["not a run folder"]),
    ("/v1/runs/nope/metrics", None, 404, ["nope"]),
])
def test_every_mistake_is_a_4xx_with_one_line(client, path, body, status, words):
    r = client.get(path) if body is None else client.post(path, content=body)
    error(r, status, *words)


@pytest.mark.parametrize("path,body,message", [
    ("/v1/generate", '{"temperature": "hot"}', 'temperature: Input should be a valid number, '
                                               'got "hot"'),
    ("/v1/generate", '{"length": 2.5}', "length: Input should be a valid integer, got 2.5"),
    ("/v1/generate", '{"length": true}', "length: Input should be a valid integer, got true"),
    ("/v1/generate", '{"top_k": -3}', "top_k: Input should be greater than or equal to 0, got -3"),
    ("/v1/generate", '{"top_p": 1.5}', "top_p: Input should be less than or equal to 1, got 1.5"),
    ("/v1/generate", '{"colour": "red"}', 'colour: Extra inputs are not permitted, got "red"'),
    ("/v1/generate", '{"prime": ["' + "a" * 100 + '"]}',
     'prime: Input should be a valid string, got ["' + "a" * 38 + "..."),
    ("/v1/score", "{}", "text: Field required"),
    ("/v1/next", '{"top": 0}', "top: Input should be greater than or equal to 1, got 0"),
])
def test_a_wrong_field_names_the_field_and_its_value(client, path, body, message):
    """A field of the wrong type or range: its name and the value sent, cut short (the line
    named the field alone: "temperature: Input should be a valid number")."""
    r = client.post(path, content=body)
    error(r, 400)
    assert r.json()["error"] == message


def test_a_big_body_is_refused(client):
    error(client.post("/v1/score", content='{"text": "' + "a" * 6000 + '"}'), 413, "--max-body")


def test_run_metrics(client, run_dir):
    m = client.get("/v1/runs/tiny/metrics").json()
    assert m["train"][0][0] == 5 and m["val"][-1][0] == 60    # tiny.yaml logs every 5 steps
    assert [len(p) for p in m["train"] + m["val"]] == [2] * (len(m["train"]) + len(m["val"]))


def test_a_token_guards_the_api_not_the_page(run_dir):
    from fastapi.testclient import TestClient

    from charlstm.serve import make_app
    with TestClient(make_app({"tiny": run_dir}, token="s3cret")) as c:
        error(c.get("/v1/models"), 401, "Bearer")
        # a wrong token is named as wrong, not as missing (the page's token box sent one)
        error(c.post("/v1/generate", json={}, headers={"Authorization": "Bearer nope"}), 401,
              "the token sent is not this server's")
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/").status_code == 200 and c.get("/healthz").status_code == 200


@pytest.mark.parametrize("token", ["", "  "])
def test_an_empty_token_is_refused_not_an_open_api(run_dir, token):
    """--token "$TOKEN" with TOKEN unset served the API to anyone, with no word of it (the
    check is `if self.token`); the command says so in one line before it listens."""
    from charlstm.serve import make_app
    with pytest.raises(CharlstmError, match="--token is empty; give the token"):
        make_app({"tiny": run_dir}, token=token)


def test_a_reloaded_checkpoint_is_served(tmp_path):
    from fastapi.testclient import TestClient

    from charlstm.serve import make_app
    folder = tiny_run(tmp_path / "r", steps=20)
    with TestClient(make_app({"r": folder})) as c:
        assert c.get("/v1/models").json()["models"][0]["step"] == 20
        charlstm.train(resume=folder, overrides={"train.max_steps": 40})   # a new best.npz
        assert c.get("/v1/models").json()["models"][0]["step"] == 40


def test_a_checkpoint_file_removed_while_served_is_still_served(run_dir, tmp_path):
    """A checkpoint given as a file, then removed or moved away: the model loaded is served on
    (reloaded() stat'ed the file: FileNotFoundError, a 500 for every request)."""
    from fastapi.testclient import TestClient

    from charlstm.serve import make_app
    path = tmp_path / "model.npz"
    shutil.copy(run_dir / "best.npz", path)
    model = charlstm.Model.load(path)
    with TestClient(make_app({"m": path})) as c:
        before = c.post("/v1/generate", json={"length": 20, "seed": 1}).json()["completions"]
        path.unlink()
        assert model.reloaded() is model
        r = c.post("/v1/generate", json={"length": 20, "seed": 1})
        assert r.status_code == 200 and r.json()["completions"] == before
        assert c.get("/v1/models").json()["models"][0]["name"] == "m"


@pytest.mark.parametrize("damage", ["emptied", "garbled"])
def test_a_run_folder_whose_checkpoint_cannot_be_read_now_is_served_as_loaded(
        run_dir, tmp_path, damage, capsys):
    """The server's trouble, not the request's: it was a 400 for every request ("holds no
    checkpoint", "not a readable checkpoint"), blaming the client."""
    from fastapi.testclient import TestClient

    from charlstm.serve import make_app
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    with TestClient(make_app({"m": folder})) as c:
        before = c.post("/v1/generate", json={"length": 20, "seed": 1}).json()["completions"]
        for name in ("best.npz", "last.npz"):
            if damage == "emptied":
                (folder / name).unlink()
            else:
                (folder / name).write_bytes(b"PK\x03\x04 not a checkpoint")
        for _ in range(2):
            r = c.post("/v1/generate", json={"length": 20, "seed": 1})
            assert r.status_code == 200 and r.json()["completions"] == before
        assert c.get("/v1/models").json()["models"][0]["name"] == "m"
    said = [ln for ln in capsys.readouterr().err.splitlines() if "served as loaded" in ln]
    assert len(said) == 1 and said[0].startswith("charlstm serve: model 'm' is served as loaded: ")


# --- a real server: batching, load, signals ------------------------------------------------------

async def generate_all(url, bodies, stream=False):
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def one(body):
            if not stream:
                r = await client.post("/v1/generate", json=body)
                assert r.status_code == 200, r.text
                return r.json()["completions"][0]
            text, first = "", None
            tic = time.perf_counter()
            async with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                raw = "".join([chunk async for chunk in r.aiter_text()])
            for kind, data in parse_sse(raw):
                assert kind in ("chunk", "done"), data
                if kind == "chunk":
                    text += data["text"]
                    first = first or time.perf_counter() - tic
            return text
        return await asyncio.gather(*(one(b) for b in bodies))


def test_64_seeded_requests_together_are_each_as_alone(tmp_path):
    """Batch invariance: each of 64 concurrent seeded requests gets the text it gets alone."""
    bodies = [{"prime": ["the ", "a", ""][i % 3], "length": 60 + i, "seed": i,
               "temperature": 0.6 + i / 64} for i in range(64)]
    with served(tmp_path) as url:
        together = asyncio.run(generate_all(url, bodies))
        alone = [asyncio.run(generate_all(url, [b]))[0] for b in bodies]
        assert together == alone and len(set(together)) == 64
        model = charlstm.Model.load(tmp_path / "served")
        assert alone[5] == served_text(model, "", 65, 5, temperature=0.6 + 5 / 64)


def test_32_streaming_clients_all_finish(tmp_path):
    bodies = [{"length": 200, "seed": i} for i in range(32)]
    with served(tmp_path) as url:
        texts = asyncio.run(generate_all(url, bodies, stream=True))
    assert [len(t) for t in texts] == [200] * 32


def test_sigterm_ends_live_streams_and_exits_0(tmp_path):
    folder = tiny_run(tmp_path / "served")
    proc, url = start_server([folder])
    try:
        with httpx.stream("POST", url + "/v1/generate", timeout=30,
                          json={"length": 10_000, "stream": True}) as r:
            chunks = r.iter_text()
            next(chunks)
            proc.send_signal(signal.SIGTERM)
            rest = "".join(chunks)
        assert "event: error" in rest and "shutting down" in rest
        assert proc.wait(timeout=20) == 0
        out = proc.stdout.read()
        assert "serving served on http://127.0.0.1" in out and "loopback only" in out
    finally:
        proc.kill()


def test_serve_command_errors(tmp_path, run_dir):
    one_line_error(invoke("serve", tmp_path), "holds no checkpoint")
    busy = free_port()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        one_line_error(invoke("serve", run_dir, "--port", busy), "cannot listen", str(busy))


def test_serve_refuses_a_nan_timeout(run_dir, monkeypatch):
    """click's FloatRange lets nan through: the server started, and no generation ever timed
    out. (serve() is replaced, so that a server taken would not run for ever here.)"""
    import charlstm.serve
    started = []
    monkeypatch.setattr(charlstm.serve, "serve", lambda *a, **k: started.append(a))
    for nan in ("nan", "NaN"):
        result = invoke("serve", run_dir, "--timeout", nan)
        assert result.exit_code == 2 and not started, result.output
        assert result.output.strip().splitlines()[-1] == \
            "Error: Invalid value for '--timeout': nan is not a number; give one > 0"
    assert invoke("serve", run_dir, "--timeout", "inf").exit_code == 0 and len(started) == 1


# --- any JSON body: a 2xx, or a 4xx with one error line ------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6)
                       | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
_fields = st.sampled_from(["model", "prime", "length", "temperature", "top_k", "top_p", "seed",
                           "n", "beam", "stream", "argmax", "skip_unknown", "text", "top",
                           "context", "other"])
_bodies = st.dictionaries(_fields, _values | st.integers(0, 40) | st.sampled_from(
    ["the ", "tiny", "file", "", "é"]), max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/generate", "/v1/score", "/v1/next"]), body=_bodies)
def test_any_json_body_is_answered_or_refused_in_one_line(client, path, body):
    if path == "/v1/generate" and body.get("stream") is True:
        body["stream"] = False                   # the streamed form is tested above
    r = client.post(path, json=body)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert list(r.json()) == ["error"] and "\n" not in r.json()["error"]


def test_a_full_server_says_retry_after_and_a_client_gone_frees_its_slot(tmp_path):
    """Over a real socket (the in-process TestClient ties generation to the client's reading):
    a busy server answers 503 with Retry-After, and a streaming client that leaves frees its slot
    within a second, each of three times, so the next client is served. With the scheduler
    holding the GIL between steps, this took 3-10 s and a later request could wait a minute."""
    args = ["--max-streams", "1", "--max-queue", "0", "--max-length", "100000000"]
    with served(tmp_path, args=args) as url:
        for _ in range(3):
            body = {"length": 100_000_000, "stream": True}
            with httpx.stream("POST", url + "/v1/generate", json=body, timeout=30) as long:
                chunks = long.iter_text()
                next(chunks)                     # it has the one slot and is generating
                busy = httpx.post(url + "/v1/generate", json={"length": 5}, timeout=30)
                error(busy, 503, "retry")
                assert busy.headers["retry-after"] == "1"
                next(chunks)
            left = time.monotonic()
            while httpx.get(url + "/healthz", timeout=30).json()["live"]:
                assert time.monotonic() - left < 1, "a client that left still holds its slot"
                time.sleep(0.02)
            r = httpx.post(url + "/v1/generate", json={"length": 5}, timeout=30)
            assert r.status_code == 200 and len(r.json()["completions"][0]) == 5


def test_a_client_gone_before_its_completion_frees_its_slot(tmp_path):
    """A non-streaming request whose client disconnects: its stream leaves the batch."""
    with served(tmp_path, args=["--max-length", "1000000"]) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/generate", json={"length": 1_000_000}, timeout=1.5)
        deadline = time.monotonic() + 10
        while httpx.get(url + "/healthz").json()["live"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(url + "/healthz").json()["live"] == 0


def test_a_client_gone_is_noticed_while_characters_keep_coming():
    """_collect ends with 499 and cancels its jobs once the client left, even while the queue
    is never empty (a busy server's scheduler thread adds characters as fast as they are taken)."""
    from charlstm.serve import Problem, _collect

    class Job:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    class Gone:                                  # a request whose client has left
        async def receive(self):
            return {"type": "http.disconnect"}

    async def scenario():
        queue, jobs = asyncio.Queue(), [Job(), Job()]

        async def produce():
            while True:
                queue.put_nowait(("chars", 0, "x"))
                await asyncio.sleep(0)
        producer = asyncio.ensure_future(produce())
        try:
            with pytest.raises(Problem) as e:
                await asyncio.wait_for(_collect(jobs, queue, Gone()), timeout=10)
        finally:
            producer.cancel()
        assert e.value.status == 499 and all(job.cancelled for job in jobs)
    asyncio.run(scenario())


def test_a_chunked_body_over_the_limit_is_refused_without_being_read_whole(run_dir):
    """A body with no Content-Length (chunked) is read only up to --max-body, then refused."""
    from charlstm.serve import Limits, make_app
    app = make_app({"tiny": run_dir}, Limits(max_body=5000))
    chunk, given, sent = b"x" * 1000, [0], []

    async def receive():                            # a body that would never end
        given[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": given[0] < 10 ** 6}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/generate", "raw_path": b"/v1/generate",
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1"), (b"transfer-encoding", b"chunked"),
                         (b"content-type", b"application/json")]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413, body
    assert "--max-body" in json.loads(body)["error"]
    assert given[0] <= 10                           # 5,000 bytes' worth, not the whole body


def asgi_post(app, path, headers, receive):
    """One POST through the ASGI app itself with a `receive` of the test's own: (status, body)
    of the reply; an exception the app lets out (a traceback in uvicorn's log) propagates."""
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1"), *headers]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent
                                     if m["type"] == "http.response.body")


def test_a_client_gone_while_sending_its_body_is_no_traceback(run_dir):
    """Content-Length: 1000, 13 bytes, then the connection closes: uvicorn's receive says
    http.disconnect. Starlette raised ClientDisconnect out of the app ("Exception in ASGI
    application" and a traceback in the server's log, for every such client)."""
    from charlstm.serve import make_app
    app = make_app({"tiny": run_dir})
    messages = iter([{"type": "http.request", "body": b'{"text": "the', "more_body": True}])

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    status, body = asgi_post(app, "/v1/score", [(b"content-length", b"1000")], receive)
    assert status == 499 and json.loads(body) == {
        "error": "the client went away before sending its whole body"}


@pytest.mark.parametrize("method,path,status,words,allow", [
    ("GET", "/nope", 404, ["GET /nope", "no such path", "/docs"], None),
    ("POST", "/v1/nope", 404, ["POST /v1/nope", "no such path"], None),
    ("GET", "/static/nope.js", 404, ["GET /static/nope.js", "no such path"], None),
    ("GET", "/v1/generate", 405, ["GET /v1/generate", "not allowed", "use POST"], "POST"),
    ("PUT", "/v1/score", 405, ["PUT /v1/score", "use POST"], "POST"),
    ("POST", "/healthz", 405, ["POST /healthz", "use GET"], "GET"),
    ("DELETE", "/v1/models", 405, ["DELETE /v1/models", "use GET"], "GET"),
])
def test_a_wrong_path_or_method_is_an_error_line_too(client, method, path, status, words, allow):
    """The framework's own 404 and 405 in the server's form, {"error": one line} (they were
    FastAPI's {"detail": "Not Found"}, which the page and API clients do not read)."""
    r = client.request(method, path)
    error(r, status, *words)
    assert (r.headers.get("allow") and set(r.headers["allow"].split(", "))) == (
        allow and set(allow.split(", ")))


@pytest.mark.parametrize("path", ["/", "/healthz"])
def test_head_asks_what_get_would_answer(client, path):
    """Monitors and link checkers send HEAD (it was a 405)."""
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


# --- beam search in a worker thread: stopped like a sampled stream --------------------------------

BEAM_LONG = {"length": 200_000, "beam": 16}       # about 10 s of a 1 x 32 model, not stopped
TOO_LONG = "the request took longer than this server's --timeout (0.2 s)"


def outcome(response):
    """(status, body), a completion cut short: a failure shows a line, not 200,000 characters."""
    body = response.json()
    return response.status_code, (body if "completions" not in body else
                                  {"completions": [t[:40] + "..." for t in body["completions"]]})


def test_a_beam_request_past_the_timeout_ends_as_a_sampled_one_does(run_dir, tiny):
    """--timeout 0.2: a beam request ends as a sampled one does, 504 with the same line, or
    streamed, an error event (it ran to its end in its worker thread, and answered 200)."""
    from fastapi.testclient import TestClient

    from charlstm.serve import Limits, make_app
    app = make_app({"tiny": run_dir}, Limits(timeout=0.2, max_length=BEAM_LONG["length"]))
    with TestClient(app) as c:
        sampled = c.post("/v1/generate", json={"length": BEAM_LONG["length"]})
        beamed = c.post("/v1/generate", json=BEAM_LONG)
        assert outcome(beamed) == outcome(sampled) == (504, {"error": TOO_LONG})
        streams = []
        for body in ({"length": BEAM_LONG["length"]}, BEAM_LONG):
            with c.stream("POST", "/v1/generate", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                streams.append(parse_sse(r.iter_text()))
        assert streams[1] == [("error", {"error": TOO_LONG})] == streams[0][-1:]
        short = c.post("/v1/generate", json={"prime": "the ", "length": 30, "beam": 3})
        assert short.json()["completions"] == [tiny.generate("the ", 30, beam=3)[4:]]


def test_a_beam_request_whose_client_left_stops_with_499(run_dir, monkeypatch):
    """The client leaves 0.3 s into the search: 499, as for a sampled request, and the search
    stops at its next step, far from its 200,000 (it ran them all, and answered 200)."""
    from charlstm import beam
    from charlstm.serve import Limits, make_app
    steps, step = [], net.step

    def counting(*args):
        steps.append(1)
        return step(*args)
    monkeypatch.setattr(beam.model, "step", counting)
    app = make_app({"tiny": run_dir}, Limits(max_length=BEAM_LONG["length"]))
    raw = json.dumps(BEAM_LONG).encode()
    messages = iter([{"type": "http.request", "body": raw, "more_body": False}])

    async def receive():
        message = next(messages, None)
        if message is None:                     # the body was read: the client leaves
            await asyncio.sleep(0.3)
            return {"type": "http.disconnect"}
        return message

    status, body = asgi_post(app, "/v1/generate", [(b"content-length", str(len(raw)).encode())],
                             receive)
    assert (status, json.loads(body)) == (499, {"error": "the client went away"})
    assert 0 < len(steps) < BEAM_LONG["length"] // 2
    app.state.scheduler.stop()


def test_beam_requests_whose_clients_left_free_the_worker_threads(tmp_path):
    """Over a real socket: 40 beam requests (the worker threads /v1/score, /v1/next and
    /v1/models share) whose clients leave after 0.5 s; then /v1/models answers, and a beam
    request in flight at SIGTERM is answered 503 and the server exits 0 (each kept its thread
    until its search ended: /v1/models waited, and the server would not exit)."""
    folder = tiny_run(tmp_path / "served")
    proc, url = start_server([folder, "--max-length", BEAM_LONG["length"]])

    async def leave_early(n):
        async with httpx.AsyncClient(base_url=url, timeout=0.5) as client:
            async def one():
                with pytest.raises(httpx.ReadTimeout):
                    await client.post("/v1/generate", json=BEAM_LONG)
            await asyncio.gather(*(one() for _ in range(n)))
    try:
        asyncio.run(leave_early(40))
        r = httpx.get(url + "/v1/models", timeout=10)
        assert r.status_code == 200 and r.json()["models"][0]["name"] == "served"

        async def stopped():
            async with httpx.AsyncClient(base_url=url, timeout=20) as client:
                pending = asyncio.ensure_future(client.post("/v1/generate", json=BEAM_LONG))
                await asyncio.sleep(0.5)                       # it is searching
                proc.send_signal(signal.SIGTERM)
                return await pending
        r = asyncio.run(stopped())
        assert outcome(r) == (503, {"error": "the server is shutting down"})
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
