// steerlab playground: plain JS, no build step. Streams the steered and unsteered completions of one
// prompt side by side (one request with "compare": true) and colours tokens by a read-out score.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { model: null, recipes: [], directions: [], controller: null, lang: "python" };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function load() {
  try {
    const [models, steering] = await Promise.all([
      fetch("/v1/models", { headers: headers() }).then((r) => r.json()),
      fetch("/v1/steering", { headers: headers() }).then((r) => r.json()),
    ]);
    if (models.error) throw new Error(models.error.message);
    state.model = models.data[0].id;
    state.recipes = steering.recipes || [];
    state.directions = steering.directions || [];
    $("model").textContent = "model: " + state.model;
    renderControls();
  } catch (e) {
    $("model").textContent = "cannot reach the server: " + e.message;
  }
  updateCode();
}

function renderControls() {
  const box = $("recipes");
  if (state.recipes.length) box.innerHTML = "";
  for (const r of state.recipes) {
    const row = document.createElement("div");
    row.className = "recipe";
    const label = document.createElement("label");
    label.textContent = r.name;
    label.title = JSON.stringify(r.interventions.map((i) => i.kind));
    const input = document.createElement("input");
    input.type = "range"; input.min = r.scalable ? "-2" : "0"; input.max = r.scalable ? "2" : "1";
    input.step = r.scalable ? "0.1" : "1"; input.value = "0";
    input.id = "scale-" + r.name; input.dataset.recipe = r.name; input.className = "scale";
    label.htmlFor = input.id;
    const value = document.createElement("output");
    value.textContent = "0";
    input.addEventListener("input", () => { value.textContent = input.value; updateCode(); });
    row.append(label, input, value);
    box.append(row);
  }
  const reads = $("reads");
  if (state.directions.length) reads.innerHTML = "";
  for (const d of state.directions) {
    const label = document.createElement("label");
    const box2 = document.createElement("input");
    box2.type = "checkbox"; box2.className = "read"; box2.value = d.name; box2.id = "read-" + d.name;
    box2.addEventListener("change", updateCode);
    label.append(box2, " " + d.name + " ");
    const note = document.createElement("span");
    note.className = "muted"; note.textContent = "(" + d.read_as + " at " + d.read_at + ")";
    label.append(note, document.createElement("br"));
    reads.append(label);
  }
}

function settings() {
  const steering = [];
  for (const input of document.querySelectorAll("input.scale")) {
    const s = parseFloat(input.value);
    if (s !== 0) steering.push(s === 1 ? input.dataset.recipe : { recipe: input.dataset.recipe, scale: s });
  }
  const read = [...document.querySelectorAll("input.read:checked")].map((b) => b.value);
  const body = {
    model: state.model || "model",
    messages: [{ role: "user", content: $("prompt").value }],
    max_tokens: parseInt($("max_tokens").value, 10) || 48,
    temperature: parseFloat($("temperature").value) || 0,
    seed: parseInt($("seed").value, 10) || 0,
  };
  const extra = { steering, compare: true };
  if (read.length) extra.read = read;
  return { body, extra };
}

function updateCode() {
  const { body, extra } = settings();
  const base = location.origin + "/v1";
  const key = $("apikey").value.trim() ? "\"YOUR_KEY\"" : "\"none\"";
  let code;
  if (state.lang === "python") {
    code = [
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url="${base}", api_key=${key})`,
      "response = client.chat.completions.create(",
      `    model=${JSON.stringify(body.model)},`,
      `    messages=${JSON.stringify(body.messages)},`,
      `    max_tokens=${body.max_tokens}, temperature=${body.temperature}, seed=${body.seed},`,
      `    extra_body=${JSON.stringify(extra).replace(/true/g, "True").replace(/false/g, "False")},`,
      ")",
      "choice = response.choices[0]",
      "print(choice.message.content)",
      "print(choice.model_extra[\"steerlab\"][\"unsteered\"][\"text\"])",
    ].join("\n");
  } else {
    const auth = $("apikey").value.trim() ? " \\\n  -H 'Authorization: Bearer YOUR_KEY'" : "";
    code = `curl ${base}/chat/completions \\\n  -H 'Content-Type: application/json'${auth} \\\n  -d '` +
      JSON.stringify({ ...body, ...extra }).replace(/'/g, "'\\''") + "'";
  }
  $("code").textContent = code;
  $("show-python").classList.toggle("active", state.lang === "python");
  $("show-curl").classList.toggle("active", state.lang === "curl");
}

// colour of a score: red above the neutral point, blue below, stronger further away
function colour(score, read, scaleMax) {
  const d = state.directions.find((x) => x.name === read);
  const centre = d && d.read_as === "probability" ? 0.5 : 0;
  const span = d && d.read_as === "probability" ? 0.5 : Math.max(scaleMax, 1e-6);
  const t = Math.max(-1, Math.min(1, (score - centre) / span));
  const alpha = (Math.abs(t) * 0.6).toFixed(3);
  return t >= 0 ? `rgba(220,40,40,${alpha})` : `rgba(40,90,220,${alpha})`;
}

function append(target, text, score, read, scaleMax) {
  const span = document.createElement("span");
  span.textContent = text;
  if (score !== undefined && score !== null) {
    span.style.background = colour(score, read, scaleMax);
    span.title = `${read}: ${score.toFixed(3)}`;
  }
  target.append(span);
}

async function run() {
  const { body, extra } = settings();
  const out = { steered: $("steered"), unsteered: $("unsteered") };
  out.steered.textContent = ""; out.unsteered.textContent = "";
  $("steered-meta").textContent = ""; $("unsteered-meta").textContent = "";
  $("status").textContent = "running…"; $("status").className = "muted";
  $("run").disabled = true; $("stop").disabled = false;
  const read = (extra.read || [])[0];
  const seen = { steered: 0, unsteered: 0 };  // largest |score| so far, per column
  state.controller = new AbortController();
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.controller.signal,
      body: JSON.stringify({ ...body, ...extra, stream: true }),
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices) {
          const ext = c.steerlab || {};
          let which = "steered", text = (c.delta && c.delta.content) || "", reads = ext.reads || {}, finish = c.finish_reason;
          if (ext.unsteered) {
            which = "unsteered"; text = ext.unsteered.text || ""; reads = ext.unsteered.reads || {};
            finish = ext.unsteered.finish_reason;
          }
          const scores = read ? reads[read] || [] : [];
          for (const s of scores) seen[which] = Math.max(seen[which], Math.abs(s));
          const score = scores.length ? scores.reduce((a, b) => a + b, 0) / scores.length : null;
          if (text) append(out[which], text, score, read, seen[which]);
          if (finish) $(which + "-meta").textContent = "finish: " + finish;
        }
      }
    }
    $("status").textContent = "done";
  } catch (e) {
    if (e.name !== "AbortError") { $("status").textContent = e.message; $("status").className = "error"; }
    else $("status").textContent = "stopped";
  } finally {
    $("run").disabled = false; $("stop").disabled = true; state.controller = null;
  }
}

$("run").addEventListener("click", run);
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("show-python").addEventListener("click", () => { state.lang = "python"; updateCode(); });
$("show-curl").addEventListener("click", () => { state.lang = "curl"; updateCode(); });
for (const id of ["prompt", "max_tokens", "temperature", "seed"]) $(id).addEventListener("input", updateCode);
$("apikey").addEventListener("change", load);
load();
