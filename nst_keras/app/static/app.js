// The nst_keras page: uploads, settings, live progress (server-sent events),
// stop / continue, downloads and the gallery.  Plain JavaScript, no library.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { content: null, styles: [], presets: {}, job: null, source: null, losses: [] };

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function setBusy(running) {
  $("stylize").disabled = running;
  $("stop").disabled = !running;
  if (running) $("continue").disabled = true;
}

// The server answers JSON, or one plain-text line when it refuses a request
// (too large, from elsewhere, without the page's cookie); either is shown as is.
async function api(path, options) {
  let response;
  try { response = await fetch(path, options); } catch (e) {
    throw new Error("Lost the connection to the server; is it still running?");
  }
  const text = await response.text();
  let body;
  try { body = JSON.parse(text); } catch (e) {
    const line = text.trim();
    body = { error: line && !line.includes("\n") && line.length < 400 ? line : "" };
  }
  if (!response.ok) throw new Error(body.error || "the server answered " + response.status);
  return body;
}

// ---- pictures -----------------------------------------------------------

function thumbnail(file) {
  const img = document.createElement("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  img.onerror = () => { img.hidden = true; };
  return img;
}

function setContent(file) {
  state.content = file;
  const thumb = $("content-thumb");
  thumb.src = URL.createObjectURL(file);
  thumb.hidden = false;
  thumb.onerror = () => { thumb.hidden = true; };
}

function addStyles(files) {
  for (const file of files) state.styles.push({ file: file, weight: 1 });
  renderStyles();
}

function renderStyles() {
  const list = $("style-list");
  list.textContent = "";
  state.styles.forEach((style, i) => {
    const item = document.createElement("li");
    item.appendChild(thumbnail(style.file));
    const name = document.createElement("span");
    name.textContent = style.file.name;
    const weight = document.createElement("input");
    Object.assign(weight, { type: "number", min: "0", step: "0.1", value: style.weight,
                            title: "blend weight" });
    weight.className = "blend";
    weight.oninput = () => { style.weight = weight.value; };
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.title = "remove";
    remove.onclick = () => { state.styles.splice(i, 1); renderStyles(); };
    item.append(name, document.createTextNode(" weight "), weight, remove);
    list.appendChild(item);
  });
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles(Array.from(e.dataTransfer.files));
  });
}

// ---- settings -------------------------------------------------------------

function applyPreset(name) {
  const form = state.presets[name];
  if (!form) return;
  for (const key of ["rows", "iterations", "optimizer", "preserve_colors"]) $(key).value = form[key];
}

function showStrength() {
  const factor = Math.pow(10, Number($("strength").value));
  $("strength-value").textContent = "×" + (factor >= 10 ? factor.toFixed(0) : factor.toPrecision(2));
}

async function loadPresets() {
  const info = await api("api/presets");
  for (const preset of info.presets) {
    state.presets[preset.name] = preset.form;
    $("preset").add(new Option(preset.label, preset.name));
  }
  for (const name of info.options.optimizer) $("optimizer").add(new Option(name, name));
  $("rows").max = info.limits.max_rows;
  applyPreset($("preset").value);
  document.body.dataset.ready = "1";
}

function formData() {
  const data = new FormData();
  if (state.content) data.append("content", state.content, state.content.name);
  for (const style of state.styles) {
    data.append("style", style.file, style.file.name);
    data.append("blend", style.weight);
  }
  for (const key of ["preset", "strength", "rows", "iterations", "optimizer", "preserve_colors", "init"]) {
    data.append(key, $(key).value);
  }
  return data;
}

// ---- a run ------------------------------------------------------------------

function seconds(s) {
  if (!isFinite(s)) return "?";
  return s >= 90 ? Math.round(s / 60) + " min" : Math.round(s) + " s";
}

function drawCurve() {
  const points = state.losses.filter((p) => p[1] > 0);
  if (points.length < 2) { $("curve-line").setAttribute("points", ""); return; }
  const logs = points.map((p) => Math.log10(p[1]));
  const lo = Math.min(...logs), hi = Math.max(...logs);
  const first = points[0][0], last = points[points.length - 1][0];
  const xy = points.map((p, i) => {
    const x = 300 * (p[0] - first) / Math.max(1, last - first);
    const y = 75 - 70 * (logs[i] - lo) / Math.max(1e-9, hi - lo);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  $("curve-line").setAttribute("points", xy.join(" "));
}

function onProgress(e) {
  const p = JSON.parse(e.data);
  state.losses.push([p.step, p.loss]);
  drawCurve();
  $("status").textContent = `Step ${p.step} of ${p.total} · loss ${p.loss.toPrecision(4)} · ` +
    `${seconds(p.elapsed_s)} so far · about ${seconds(p.eta_s)} left`;
  if (p.image) {
    const img = $("preview");
    img.src = p.image;
    img.hidden = false;
    img.dataset.updates = String(Number(img.dataset.updates) + 1);
  }
}

function onEnd(e) {
  const job = JSON.parse(e.data);
  closeStream();
  setBusy(false);
  $("continue").disabled = !job.can_continue;
  const words = { finished: "Finished", stopped: "Stopped", failed: "Failed", cancelled: "Cancelled" };
  $("status").textContent = `${words[job.status] || job.status} at step ${job.step} of ${job.total}` +
    (job.reason ? ` (${job.reason})` : "") + ".";
  document.body.dataset.result = job.status;
  if (job.error) showMessage(job.error);
  if (job.image) {
    $("preview").src = job.image + "?t=" + Date.now();
    $("preview").hidden = false;
    $("download-png").href = job.image;
    $("download-json").href = job.run_json || "#";
    $("download-json").hidden = !job.run_json;
    $("downloads").hidden = false;
  }
  loadGallery();
}

function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
}

function listen(id, keepCurve) {
  closeStream();
  state.job = id;
  if (!keepCurve) state.losses = [];
  document.body.dataset.result = "";
  const source = new EventSource(`api/jobs/${id}/events`);
  state.source = source;
  source.addEventListener("queue", (e) => {
    const place = JSON.parse(e.data).position;
    if (place > 0) $("status").textContent = `Waiting: number ${place} in the queue (another run is going).`;
  });
  source.addEventListener("start", (e) => {
    const s = JSON.parse(e.data);
    if (s.losses.length) state.losses = s.losses;
    $("status").textContent = `Starting (step ${s.step} of ${s.total})…`;
  });
  source.addEventListener("progress", onProgress);
  source.addEventListener("end", onEnd);
  source.onerror = () => {
    if (state.source !== source) return;
    closeStream();
    setBusy(false);
    showMessage("Lost the connection to the server; is it still running?");
  };
}

async function start(path, options, keepCurve) {
  showMessage("");
  setBusy(true);
  $("downloads").hidden = true;
  try {
    const job = await api(path, options);
    listen(job.id, keepCurve);
  } catch (err) {
    setBusy(false);
    $("status").textContent = "Nothing is running.";
    showMessage(err.message);
  }
}

// ---- gallery --------------------------------------------------------------

function useAsStart(result) {
  const value = "result:" + result.id;
  const select = $("init");
  if (![...select.options].some((o) => o.value === value)) {
    select.add(new Option(`result of run ${result.id}`, value));
  }
  select.value = value;
}

function card(result) {
  const div = document.createElement("div");
  div.className = "card";
  const img = document.createElement("img");
  img.src = result.image;
  img.alt = `result of run ${result.id}`;
  const s = result.summary;
  const text = document.createElement("p");
  text.textContent = `Run ${result.id} (${result.status}, step ${result.step}/${result.total}): ` +
    `${s.preset}, ${s.rows} rows, ${s.iterations} × ${s.optimizer}, strength ×` +
    `${Math.pow(10, s.strength).toPrecision(2)}, colours ${s.preserve_colors}, from ${s.init}; ` +
    s.pictures.join(" + ");
  const use = document.createElement("button");
  use.textContent = "Use as start";
  use.onclick = () => useAsStart(result);
  const link = document.createElement("a");
  link.href = result.image;
  link.download = "";
  link.textContent = " PNG";
  div.append(img, text, use, link);
  return div;
}

async function loadGallery() {
  const { results } = await api("api/gallery");
  const gallery = $("gallery");
  gallery.textContent = "";
  if (!results.length) gallery.innerHTML = '<p class="empty">Nothing yet.</p>';
  for (const result of results) gallery.appendChild(card(result));
}

// ---- wiring ---------------------------------------------------------------

function wire() {
  $("content-input").onchange = (e) => { if (e.target.files[0]) setContent(e.target.files[0]); };
  $("style-input").onchange = (e) => { addStyles(Array.from(e.target.files)); e.target.value = ""; };
  dropZone($("content-drop"), (files) => setContent(files[0]));
  dropZone($("style-drop"), addStyles);
  $("preset").onchange = () => applyPreset($("preset").value);
  $("strength").oninput = showStrength;
  $("stylize").onclick = () => start("api/jobs", { method: "POST", body: formData() }, false);
  $("stop").onclick = () => { if (state.job) api(`api/jobs/${state.job}/stop`, { method: "POST" }).catch((e) => showMessage(e.message)); };
  $("continue").onclick = () => start(`api/jobs/${state.job}/continue`, { method: "POST" }, true);
  showStrength();
  loadPresets().catch((e) => showMessage(e.message));
  loadGallery().catch((e) => showMessage(e.message));
}

wire();
