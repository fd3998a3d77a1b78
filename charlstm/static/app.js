// The page of `charlstm serve`: four tabs over the JSON API (/v1/...), no libraries.
//
//   Generate  POST v1/generate with "stream": true, read as server-sent events through fetch
//             (EventSource cannot POST); Stop aborts the fetch.
//   Score     POST v1/score; one <span> per character, shaded by its surprisal.
//   Write     POST v1/next as the user types; the likeliest next characters as buttons.
//   Run       GET v1/runs/{name}/metrics every 5 s, drawn as an inline SVG.
//
// Paths are relative ("v1/models", not "/v1/models") so the page also works behind a proxy that
// serves it under a prefix. Errors go to one visible line (#error), never to alert().

"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "charlstm.token";
const SURPRISAL_MAX = 6;       // nats at which the shading is full: p = e^-6 = 0.25 %
const RUN_POLL_MS = 5000;
const WRITE_DEBOUNCE_MS = 150;

let models = [];               // the entries of GET v1/models

// --- talking to the server ------------------------------------------------------------------

class ApiError extends Error {}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

// fetch a v1 path; returns the Response when it is 2xx, else throws ApiError with the server's
// one-line {"error": ...}. A 401 also opens the token box.
async function request(path, {body, signal} = {}) {
  let res;
  try {
    res = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("cannot reach the server (" + e.message + "); is charlstm serve still " +
                       "running? Start it again, then retry");
  }
  if (res.ok) return res;
  if (res.status === 401) showTokenBox();
  let message = res.status + " " + res.statusText;
  try {
    const data = await res.json();
    if (data && data.error) message = data.error;
  } catch (_) { /* not JSON: keep the status line */ }
  throw new ApiError(message);
}

async function getJSON(path, body, signal) {
  return (await request(path, {body, signal})).json();
}

function showError(message) {
  const line = $("error");
  line.textContent = message;
  line.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Report what a failed action threw; an abort is the user's own doing, not an error.
function report(e) {
  if (e.name === "AbortError") return;
  showError(e instanceof ApiError ? e.message : "error in the page: " + e.message);
  if (!(e instanceof ApiError)) console.error(e);
}

function showTokenBox() {
  $("token-box").hidden = false;
  $("token").focus();
}

$("token-box").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $("token-box").hidden = true;
  clearError();
  loadModels();
});

// --- models -----------------------------------------------------------------------------------

function currentModel() {
  return models.find((m) => m.name === $("model").value) || models[0];
}

function modelName() {
  const m = currentModel();
  return m ? m.name : undefined;     // undefined: the key is left out, the server takes its first
}

function describe(m) {
  const parts = [m.cell, m.layers + " × " + m.hidden, "vocab " + m.vocab_size,
                 Number(m.parameters).toLocaleString("en") + " parameters"];
  if (m.best_val != null) parts.push("best val " + m.best_val.toFixed(4) + " nats/char");
  if (m.step != null) parts.push("step " + m.step);
  return parts.join(" · ");
}

// Fill the picker, keeping the current choice; refreshed by the Run tab too, since a live run
// reloads best.npz and its entry's step and best_val change.
async function loadModels() {
  try {
    const data = await getJSON("v1/models");
    models = data.models || [];
    const select = $("model");
    const chosen = select.value;
    const names = models.map((m) => m.name);
    if (names.join("\n") !== Array.from(select.options, (o) => o.value).join("\n")) {
      select.replaceChildren(...names.map((n) => new Option(n, n)));
      if (names.includes(chosen)) select.value = chosen;
    }
    modelChanged();
  } catch (e) {
    report(e);
  }
}

function modelChanged() {
  const m = currentModel();
  $("model-info").textContent = m ? describe(m) : "no model";
  const runTab = document.querySelector('[data-tab="run"]');
  runTab.hidden = !(m && m.run);
  if (runTab.hidden && runTab.getAttribute("aria-selected") === "true") showTab("generate");
  updateRunPolling();
}

$("model").addEventListener("change", () => {
  clearError();
  modelChanged();
  if (activeTab() === "write") suggest();
});

// --- tabs -------------------------------------------------------------------------------------

function activeTab() {
  return document.querySelector('[role=tab][aria-selected="true"]').dataset.tab;
}

function showTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", String(on));
    $("tab-" + tab.dataset.tab).hidden = !on;
  }
  if (name === "write") suggest();
  updateRunPolling();
}

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => showTab(tab.dataset.tab));
}

// How a character is shown where whitespace would be invisible.
function visible(ch) {
  return {"\n": "⏎", " ": "␣", "\t": "⇥", "\r": "␍"}[ch] ?? ch;
}

function percent(p) {
  return p >= 0.001 ? (100 * p).toFixed(1) + " %" : p.toExponential(1);
}

// --- Generate ---------------------------------------------------------------------------------

let generation = null;         // the AbortController of the stream being read

// A number input's value, or undefined when empty (the server's default then applies).
function numberField(id, integer) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const x = Number(raw);
  if (!Number.isFinite(x) || (integer && !Number.isInteger(x))) {
    throw new ApiError($(id).closest("label").firstChild.textContent.trim() + ": not " +
                       (integer ? "an integer" : "a number") + ": " + raw);
  }
  return x;
}

// Split a server-sent-events buffer into complete events; returns [events, rest of the buffer].
function parseEvents(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();                // the last block may still be arriving
  for (const block of blocks) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;   // an SSE comment (keep-alive)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) events.push({type, data: JSON.parse(data.join("\n"))});
  }
  return [events, rest];
}

function generateBody() {
  return {
    model: modelName(),
    prime: $("gen-prime").value,
    temperature: numberField("gen-temperature"),
    top_p: numberField("gen-top-p"),
    length: numberField("gen-length", true),
    seed: numberField("gen-seed", true),
    stream: true,
  };
}

async function generate() {
  clearError();
  let body;
  try {
    body = generateBody();
  } catch (e) {
    report(e);
    return;
  }
  $("gen-prime-out").textContent = body.prime;
  const out = $("gen-text");
  out.textContent = "";
  const status = $("gen-status");
  status.textContent = "generating…";
  generation = new AbortController();
  $("gen-go").disabled = true;
  $("gen-stop").disabled = false;
  const started = performance.now();
  let chars = 0;
  try {
    const res = await request("v1/generate", {body, signal: generation.signal});
    const type = res.headers.get("Content-Type") || "";
    if (!type.startsWith("text/event-stream")) {   // a server that ignored "stream": one reply
      const data = await res.json();
      out.textContent = data.completions[0];
      status.textContent = describeDone(data.chars, data.seconds);
      return;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await readOrLost(reader, chars);
      if (done) break;
      let events;
      [events, buffer] = parseEvents(buffer + value);
      for (const ev of events) {
        if (ev.type === "chunk" && (ev.data.index ?? 0) === 0) {
          out.append(ev.data.text);
          chars += Array.from(ev.data.text).length;
          status.textContent = "generating… " + chars + " chars";
          keepScrolled($("gen-output"));
        } else if (ev.type === "done") {
          status.textContent = describeDone(ev.data.chars, ev.data.seconds);
        } else if (ev.type === "error") {
          throw new ApiError(ev.data.error);
        }
      }
    }
    if (status.textContent.startsWith("generating")) {
      status.textContent = "the stream ended early after " + chars + " chars";
    }
  } catch (e) {
    if (e.name === "AbortError") {
      const s = (performance.now() - started) / 1000;
      status.textContent = "stopped after " + chars + " chars, " + s.toFixed(1) + " s";
    } else {
      status.textContent = "";
      report(e);
    }
  } finally {
    generation = null;
    $("gen-go").disabled = false;
    $("gen-stop").disabled = true;
  }
}

// reader.read(), where a connection cut mid-stream (the server killed, the network gone) is the
// server's trouble, not "error in the page: network error".
async function readOrLost(reader, chars) {
  try {
    return await reader.read();
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("the connection to the server was lost after " + chars + " chars (" +
                       e.message + "); is charlstm serve still running? Start it again, then " +
                       "retry");
  }
}

function describeDone(chars, seconds) {
  const rate = seconds > 0
    ? " (" + Math.round(chars / seconds).toLocaleString("en") + " chars/s)" : "";
  return "done: " + chars + " chars in " + Number(seconds).toFixed(2) + " s" + rate;
}

// Follow the end of the output while it grows, unless the user has scrolled up to read.
function keepScrolled(el) {
  if (el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
}

$("gen-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!generation) generate();
});
$("gen-stop").addEventListener("click", () => generation && generation.abort());

// --- Score ------------------------------------------------------------------------------------

// White at 0 nats to a strong red at SURPRISAL_MAX and above.
function shade(nats) {
  const t = Math.min(Math.max(nats / SURPRISAL_MAX, 0), 1);
  const mix = (to) => Math.round(255 + (to - 255) * t);
  return "rgb(" + mix(214) + ", " + mix(39) + ", " + mix(40) + ")";
}

function scoreTitle(ch, nats, guesses) {
  if (nats == null) return visible(ch) + "  not scored";
  const lines = [visible(ch) + "  p = " + Math.exp(-nats).toFixed(4) + "  (" + nats.toFixed(2) +
                 " nats)"];
  if (guesses && guesses.length) {
    lines.push("guesses: " + guesses.map((g) => visible(g.char) + " " + g.p.toFixed(3)).join(", "));
  }
  return lines.join("\n");
}

async function score() {
  clearError();
  const text = $("score-text").value;
  $("score-go").disabled = true;
  try {
    const data = await getJSON("v1/score", {model: modelName(), text, top: 3});
    const chars = Array.from(text);         // by code point, as the server counts characters
    if (data.surprisal.length !== chars.length) {   // shading would land on the wrong characters
      throw new ApiError("the server scored " + data.surprisal.length + " positions for " +
                         chars.length + " characters");
    }
    const outEl = $("score-output");
    const spans = chars.map((ch, i) => {
      const span = document.createElement("span");
      const nats = data.surprisal[i];
      span.className = nats == null ? "ch unscored" : "ch";
      // a newline gets a visible mark to carry its shade, then the line break itself
      span.textContent = ch === "\n" ? "⏎" : ch;
      if (nats != null) span.style.backgroundColor = shade(nats);
      span.title = scoreTitle(ch, nats, data.guesses && data.guesses[i]);
      return ch === "\n" ? [span, "\n"] : [span];
    });
    outEl.replaceChildren(...spans.flat());
    $("score-summary").textContent = data.loss == null ? "nothing to score" :
      "loss " + data.loss.toFixed(4) + " nats/char · " + data.bpc.toFixed(3) + " bits/char · " +
      data.chars + (data.chars === 1 ? " char scored" : " chars scored");
  } catch (e) {
    report(e);
  } finally {
    $("score-go").disabled = false;
  }
}

$("score-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  score();
});

// The title shows after a delay; the line under the text shows the same at once.
$("score-output").addEventListener("mouseover", (ev) => {
  if (ev.target.classList.contains("ch")) $("score-detail").textContent = ev.target.title;
});

// --- Write ------------------------------------------------------------------------------------

let suggestTimer = null;
let suggestion = null;         // the AbortController of the request in flight

// Ask for the next character of the text; a newer request cancels the older, so a slow reply
// never overwrites the answer for what the user has typed since.
async function suggest() {
  clearTimeout(suggestTimer);
  if (suggestion) suggestion.abort();
  const controller = suggestion = new AbortController();
  const context = $("write-text").value;
  try {
    const data = await getJSON("v1/next", {model: modelName(), context, top: 8}, controller.signal);
    clearError();
    showOptions(data.distribution);
  } catch (e) {
    report(e);
  } finally {
    if (suggestion === controller) suggestion = null;
  }
}

function showOptions(distribution) {
  const best = distribution.length ? distribution[0].p : 1;
  $("write-options").replaceChildren(...distribution.map(({char, p}) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "option";
    button.dataset.char = char;
    button.title = "append " + JSON.stringify(char);
    const label = document.createElement("span");
    label.className = "char";
    label.textContent = visible(char);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (100 * p / best).toFixed(1) + "%";     // the likeliest fills its row
    const prob = document.createElement("span");
    prob.className = "p";
    prob.textContent = percent(p);
    button.append(label, bar, prob);
    button.addEventListener("click", () => append(char));
    return button;
  }));
}

function append(char) {
  const area = $("write-text");
  area.value += char;
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
  area.scrollTop = area.scrollHeight;
  suggest();
}

$("write-text").addEventListener("input", () => {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(suggest, WRITE_DEBOUNCE_MS);
});

// --- Run --------------------------------------------------------------------------------------

let runTimer = null;

// Poll only while the Run tab is shown for a model that comes from a run folder.
function updateRunPolling() {
  const m = currentModel();
  const on = activeTab() === "run" && m && m.run;
  if (on && runTimer === null) {
    refreshRun();
    runTimer = setInterval(refreshRun, RUN_POLL_MS);
  } else if (!on && runTimer !== null) {
    clearInterval(runTimer);
    runTimer = null;
  }
}

async function refreshRun() {
  const name = modelName();
  try {
    const [metrics, list] = await Promise.all([
      getJSON("v1/runs/" + encodeURIComponent(name) + "/metrics"),
      getJSON("v1/models"),
    ]);
    if (modelName() !== name) return;       // the user picked another model meanwhile
    models = list.models || models;
    const m = currentModel();
    $("model-info").textContent = describe(m);
    drawRun(metrics, m);
  } catch (e) {
    report(e);
  }
}

function drawRun(metrics, m) {
  const train = metrics.train || [], val = metrics.val || [];
  const last = (xs) => xs.length ? xs[xs.length - 1] : null;
  const parts = [];
  const t = last(train), v = last(val);
  if (t) parts.push("train " + t[1].toFixed(4) + " at step " + t[0]);
  if (v) parts.push("validation " + v[1].toFixed(4) + " at step " + v[0]);
  $("run-latest").textContent = parts.length ? "latest: " + parts.join(" · ") : "no metrics yet";
  $("run-reloaded").textContent = m.step != null
    ? "best.npz reloaded at step " + m.step +
      (m.best_val != null ? " (best val " + m.best_val.toFixed(4) + ")" : "")
    : "";
  $("run-chart").replaceChildren(chart([
    {name: "train", points: train, cls: "train"},
    {name: "validation", points: val, cls: "val", dots: true},
  ]));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// About n round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart).
function ticks(lo, hi, n) {
  const span = hi - lo || 1;
  const raw = span / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw);
  const out = [];
  // toPrecision drops the float dust of repeated additions (0.30000000000000004)
  for (let x = Math.ceil(lo / step) * step; x <= hi + step * 1e-9; x += step) {
    out.push(+x.toPrecision(12));
  }
  return out;
}

// Loss against step: one polyline per series, axes with round ticks, a legend.
function chart(series) {
  const W = 760, H = 340, left = 56, right = 16, top = 16, bottom = 40;
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart",
                           role: "img", "aria-label": "loss against step"});
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    root.append(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted"},
                    "no metrics yet"));
    return root;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  const pad = (y1 - y0) * 0.05 || 0.5;
  y0 -= pad; y1 += pad;
  const X = (x) => left + (x - x0) / (x1 - x0) * (W - left - right);
  const Y = (y) => H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom);

  for (const y of ticks(y0, y1, 6)) {
    root.append(svg("line", {x1: left, x2: W - right, y1: Y(y), y2: Y(y), class: "grid"}),
                svg("text", {x: left - 6, y: Y(y) + 4, "text-anchor": "end"}, String(y)));
  }
  for (const x of ticks(x0, x1, 8)) {
    root.append(svg("text", {x: X(x), y: H - bottom + 16, "text-anchor": "middle"}, String(x)));
  }
  root.append(svg("rect", {x: left, y: top, width: W - left - right, height: H - top - bottom,
                           class: "frame"}),
              svg("text", {x: (left + W - right) / 2, y: H - 6, "text-anchor": "middle"}, "step"),
              svg("text", {x: 14, y: (top + H - bottom) / 2, "text-anchor": "middle",
                           transform: `rotate(-90 14 ${(top + H - bottom) / 2})`},
                  "loss (nats/char)"));

  series.forEach((s, k) => {
    if (s.points.length) {
      const pts = s.points.map(([x, y]) => X(x).toFixed(1) + "," + Y(y).toFixed(1)).join(" ");
      root.append(svg("polyline", {points: pts, class: "line " + s.cls}));
      if (s.dots) {
        for (const [x, y] of s.points) {
          root.append(svg("circle", {cx: X(x), cy: Y(y), r: 3, class: "dot " + s.cls}));
        }
      }
    }
    const ly = top + 14 + 18 * k;           // the legend, top right
    root.append(svg("line", {x1: W - right - 130, x2: W - right - 106, y1: ly - 4, y2: ly - 4,
                             class: "line " + s.cls}),
                svg("text", {x: W - right - 100, y: ly}, s.name));
  });
  return root;
}

// --- start --------------------------------------------------------------------------------------

loadModels();
