// The nst_keras page: uploads, settings, live progress (server-sent events),
// stop / continue, downloads, the gallery, and trained networks (a picture at
// once, the camera live).  Plain JavaScript, no library.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { content: null, styles: [], presets: {}, job: null, source: null, losses: [], busy: false };

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function setBusy(running) {
  state.busy = running;
  $("stylize").disabled = running;
  $("stop").disabled = !running;
  if (running) $("continue").disabled = true;
  for (const button of document.querySelectorAll("#gallery button.continue")) button.disabled = running;
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
  loadRegionsPhoto(file);
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
    remove.onclick = () => { state.styles.splice(i, 1); dropRegion(i + 1); renderStyles(); };
    item.append(name, document.createTextNode(" weight "), weight, remove);
    list.appendChild(item);
  });
  showRegions();
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

// ---- a style per region -----------------------------------------------------
// The photo on a canvas, painted with one brush per painting.  ``labels``
// holds, per canvas pixel, the painting whose brush painted it (1, 2, ...) or
// 0 (unpainted); the masks sent are made from it: white where that painting
// applies, black elsewhere.  With two or more paintings the unpainted pixels
// are painting 1's, so the masks share the photo out; with one, its mask is
// where it was painted.  Nothing painted: no masks (every painting everywhere).

const BRUSH_COLOURS = [[229, 62, 62], [49, 130, 206], [56, 161, 105], [214, 158, 46],
                       [128, 90, 213], [221, 107, 32], [49, 151, 149], [213, 63, 140]];
const OVERLAY_ALPHA = 140;     // the painted colours over the photo, of 255
const MAX_CANVAS_SIDE = 1024;  // the masks' size: the photo's, at most this
const regions = { labels: null, overlay: null, width: 0, height: 0, brush: 1, last: null,
                  dirty: null, loading: 0 };

function regionsSize(img) {
  const w = img.naturalWidth, h = img.naturalHeight;
  let scale = Math.min(1, MAX_CANVAS_SIDE / Math.max(w, h));
  scale = Math.max(scale, Math.min(1, 32 / Math.min(w, h)));  // the server's smallest side
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale))];
}

function loadRegionsPhoto(file) {
  const token = ++regions.loading;
  regions.labels = null;
  showRegions();
  const img = new Image();
  img.onload = () => {
    if (token !== regions.loading) return;
    const [w, h] = regionsSize(img);
    for (const id of ["regions-photo", "regions-canvas"]) { $(id).width = w; $(id).height = h; }
    $("regions-photo").getContext("2d").drawImage(img, 0, 0, w, h);
    Object.assign(regions, { width: w, height: h, labels: new Uint8Array(w * h),
      overlay: $("regions-canvas").getContext("2d").createImageData(w, h) });
    redrawOverlay();
    showRegions();
  };
  img.src = URL.createObjectURL(file);
}

function colourOf(brush) {
  return BRUSH_COLOURS[(brush - 1) % BRUSH_COLOURS.length];
}

function showRegions() {
  const n = state.styles.length;
  $("regions").hidden = !(regions.labels && n >= 1);
  if (regions.brush > n) regions.brush = 1;
  $("regions-rule").textContent = n >= 2 ? "Unpainted: painting 1."
    : "Unpainted: no style (the photo as it is).";
  const brushes = $("brushes");
  brushes.textContent = "";
  state.styles.forEach((style, i) => {
    const swatch = document.createElement("button");
    Object.assign(swatch, { type: "button", className: "swatch", title: `paint with painting ${i + 1}` });
    swatch.dataset.brush = String(i + 1);
    swatch.style.background = `rgb(${colourOf(i + 1).join(",")})`;
    swatch.style.color = "#fff";
    swatch.classList.toggle("active", regions.brush === i + 1);
    swatch.append(thumbnail(style.file), document.createTextNode(String(i + 1)));
    swatch.onclick = () => { regions.brush = i + 1; showRegions(); };
    brushes.appendChild(swatch);
  });
  $("eraser").classList.toggle("active", regions.brush === 0);
}

function dropRegion(k) {
  // Painting k is gone: its pixels are unpainted, the later ones move down.
  if (!regions.labels) return;
  const labels = regions.labels;
  for (let at = 0; at < labels.length; at++) {
    if (labels[at] === k) labels[at] = 0;
    else if (labels[at] > k) labels[at] -= 1;
  }
  if (regions.brush >= k && regions.brush > 0) regions.brush = Math.max(1, regions.brush - 1);
  redrawOverlay();
}

function setOverlayPixel(at, brush) {
  const c = brush ? colourOf(brush) : [0, 0, 0];
  regions.overlay.data.set([c[0], c[1], c[2], brush ? OVERLAY_ALPHA : 0], at * 4);
}

function redrawOverlay() {
  if (!regions.labels) return;
  regions.labels.forEach((brush, at) => setOverlayPixel(at, brush));
  regions.dirty = [0, 0, regions.width - 1, regions.height - 1];
  flushOverlay();
}

function flushOverlay() {
  const d = regions.dirty;
  if (!d) return;
  regions.dirty = null;
  $("regions-canvas").getContext("2d").putImageData(regions.overlay, 0, 0, d[0], d[1],
                                                    d[2] - d[0] + 1, d[3] - d[1] + 1);
}

function stamp(x, y, radius) {
  const { width, height, labels } = regions;
  const x0 = Math.max(0, Math.floor(x - radius)), x1 = Math.min(width - 1, Math.ceil(x + radius));
  const y0 = Math.max(0, Math.floor(y - radius)), y1 = Math.min(height - 1, Math.ceil(y + radius));
  if (x0 > x1 || y0 > y1) return;
  for (let j = y0; j <= y1; j++) {
    for (let i = x0; i <= x1; i++) {
      if ((i + 0.5 - x) ** 2 + (j + 0.5 - y) ** 2 > radius * radius) continue;
      labels[j * width + i] = regions.brush;
      setOverlayPixel(j * width + i, regions.brush);
    }
  }
  const d = regions.dirty || [x0, y0, x1, y1];
  regions.dirty = [Math.min(d[0], x0), Math.min(d[1], y0), Math.max(d[2], x1), Math.max(d[3], y1)];
}

function strokeTo(e) {
  const rect = $("regions-canvas").getBoundingClientRect();
  const scale = regions.width / rect.width;
  const x = (e.clientX - rect.left) * scale, y = (e.clientY - rect.top) * regions.height / rect.height;
  const radius = Math.max(0.75, Number($("brush-size").value) / 2 * scale);
  const [lx, ly] = regions.last || [x, y];
  const steps = Math.max(1, Math.ceil(Math.hypot(x - lx, y - ly) / Math.max(0.5, radius / 2)));
  for (let s = 1; s <= steps; s++) stamp(lx + (x - lx) * s / steps, ly + (y - ly) * s / steps, radius);
  regions.last = [x, y];
  requestAnimationFrame(flushOverlay);
}

function wireRegions() {
  const canvas = $("regions-canvas");
  canvas.addEventListener("pointerdown", (e) => {
    if (!regions.labels) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    regions.last = null;
    strokeTo(e);
  });
  canvas.addEventListener("pointermove", (e) => { if (regions.last) strokeTo(e); });
  const end = () => { regions.last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("eraser").onclick = () => { regions.brush = 0; showRegions(); };
  $("clear-regions").onclick = () => { if (regions.labels) { regions.labels.fill(0); redrawOverlay(); } };
}

async function maskFiles() {
  // The masks to send: [] when nothing is painted, else one PNG per painting.
  const n = state.styles.length, labels = regions.labels;
  if (!labels || !n || !labels.some((brush) => brush > 0)) return [];
  const canvas = document.createElement("canvas");
  Object.assign(canvas, { width: regions.width, height: regions.height });
  const context = canvas.getContext("2d");
  const files = [];
  for (let k = 1; k <= n; k++) {
    const image = context.createImageData(regions.width, regions.height);
    let used = false;
    labels.forEach((brush, at) => {
      const on = brush === k || (brush === 0 && k === 1 && n > 1);
      used = used || on;
      image.data.fill(on ? 255 : 0, at * 4, at * 4 + 3);
      image.data[at * 4 + 3] = 255;
    });
    if (!used) throw new Error(`Painting ${k} has no region on the photo: paint some of it with ` +
                               "its brush, remove the painting, or press Clear.");
    context.putImageData(image, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    files.push(new File([blob], `mask_${k}.png`, { type: "image/png" }));
  }
  return files;
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
  [$("strength").min, $("strength").max] = info.limits.strength;
  showStrength();
  applyPreset($("preset").value);
  document.body.dataset.ready = "1";
}

async function formData() {
  const data = new FormData();
  if (state.content) data.append("content", state.content, state.content.name);
  for (const style of state.styles) {
    data.append("style", style.file, style.file.name);
    data.append("blend", style.weight);
  }
  for (const key of ["preset", "strength", "rows", "iterations", "optimizer", "preserve_colors", "init"]) {
    data.append(key, $(key).value);
  }
  (await maskFiles()).forEach((file, i) => data.append("mask_" + (i + 1), file, file.name));
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
    s.pictures.join(" + ") + (s.regions ? " (a style per painted region)" : "");
  const use = document.createElement("button");
  use.textContent = "Use as start";
  use.onclick = () => useAsStart(result);
  const link = document.createElement("a");
  link.href = result.image;
  link.download = "";
  link.textContent = " PNG";
  div.append(img, text, use);
  if (result.can_continue) {
    const more = document.createElement("button");
    more.textContent = "Continue";
    more.className = "continue";
    more.disabled = Boolean(state.busy);
    more.onclick = () => start(`api/jobs/${result.id}/continue`, { method: "POST" }, false);
    div.append(more);
  }
  div.append(link);
  return div;
}

async function loadGallery() {
  const { results } = await api("api/gallery");
  const gallery = $("gallery");
  gallery.textContent = "";
  if (!results.length) gallery.innerHTML = '<p class="empty">Nothing yet.</p>';
  for (const result of results) gallery.appendChild(card(result));
}


// ---- trained networks: a picture at once, and the camera live ------------------
// With a network chosen, Stylize sends the photo to api/stylize and shows the
// PNG it answers.  The camera sends frames over a WebSocket (api/live) at the
// server's live size, at most two unanswered at a time, so a slow server never
// builds a queue (it keeps only the newest frame anyway, and says how many it
// dropped); each answer is a JPEG shown in #live, and #live-fps counts them.
// #live-rows: the frames' height (the server's --live_rows first; fewer rows are
// faster).  #steady: the share of the previous stylised frame the server carries along
// the motion into the next (less flicker), shown when the server can.

const live = { ws: null, stream: null, inFlight: 0, times: [], url: null, ready: false,
               loading: false, next: null, watchdog: 0,
               dropped: 0, lastAnswer: 0, canvas: document.createElement("canvas") };

async function loadNetworks() {
  const info = await api("api/networks");
  state.networks = {};
  const sizes = new Set([128, 192, 256, 320, 384, 480, info.live_rows]);
  const offered = (r) => r <= info.max_live_rows || r === info.live_rows;
  for (const rows of Array.from(sizes).filter(offered).sort((a, b) => a - b)) {
    $("live-rows").add(new Option(rows + " rows", String(rows), false, rows === info.live_rows));
  }
  $("steady").value = String(info.live_steady);
  $("steady-label").hidden = !info.steady_available;
  for (const net of info.networks) {
    state.networks[net.id] = net;
    $("network").add(new Option(net.id + (net.styles > 1 ? ` (${net.styles} paintings)` : ""), net.id));
  }
  const any = info.networks.length > 0;
  $("network-label").hidden = !any;
  $("camera").hidden = !any;
  document.body.dataset.networks = String(info.networks.length);
}

function chosenNetwork() { return state.networks ? state.networks[$("network").value] : undefined; }

function renderBlendSliders() {
  const box = $("blend-sliders"), net = chosenNetwork();
  box.textContent = "";
  box.hidden = !net || net.styles < 2;
  if (box.hidden) return;
  box.appendChild(document.createTextNode("Blend of the paintings:"));
  for (let k = 0; k < net.styles; k++) {
    const label = document.createElement("label");
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: "0", max: "1", step: "0.05", value: "1", id: "blend-" + k });
    slider.oninput = sendLiveSettings;
    label.append(document.createTextNode("painting " + (k + 1)), slider);
    box.appendChild(label);
  }
}

function blendWeights() {
  const net = chosenNetwork();
  if (!net || net.styles < 2) return [];
  const weights = [];
  for (let k = 0; k < net.styles; k++) weights.push(Number($("blend-" + k).value));
  return weights;
}

async function failure(response) {
  const line = (await response.text()).trim();
  try { return JSON.parse(line).error; } catch (e) {
    return line && !line.includes("\n") && line.length < 400 ? line : "the server answered " + response.status;
  }
}

async function stylizeWithNetwork() {
  showMessage("");
  if (!state.content) { showMessage("Choose a content photo first."); return; }
  const data = new FormData();
  data.append("content", state.content, state.content.name);
  data.append("network", $("network").value);
  data.append("rows", $("rows").value);
  for (const w of blendWeights()) data.append("blend", w);
  $("stylize").disabled = true;
  document.body.dataset.result = "";
  try {
    let response;
    try { response = await fetch("api/stylize", { method: "POST", body: data }); } catch (e) {
      throw new Error("Lost the connection to the server; is it still running?");
    }
    if (!response.ok) throw new Error(await failure(response));
    const url = URL.createObjectURL(await response.blob());
    $("preview").src = url;
    $("preview").hidden = false;
    $("download-png").href = url;
    $("download-png").setAttribute("download", $("network").value + "_stylized.png");
    $("download-json").hidden = true;
    $("downloads").hidden = false;
    $("status").textContent = `Stylised with ${$("network").value} in ` +
      `${Math.round(Number(response.headers.get("X-Stylize-Ms")))} ms.`;
    document.body.dataset.result = "stylized";
  } catch (err) {
    showMessage(err.message);
  } finally {
    $("stylize").disabled = false;
  }
}

function liveRows() { return Number($("live-rows").value); }

function sendLiveSettings() {
  if (!live.ws || live.ws.readyState !== WebSocket.OPEN) return;
  live.ws.send(JSON.stringify({ network: $("network").value, blend: blendWeights(), rows: liveRows(),
                                steady: Number($("steady").value) }));
}

function showFps() {
  const now = performance.now();
  live.times = live.times.filter((t) => now - t < 2000);
  const n = live.times.length;
  const fps = n > 1 ? (n - 1) * 1000 / (live.times[n - 1] - live.times[0]) : 0;
  $("live-fps").textContent = fps.toFixed(1) + " fps";
}

function sendFrame() {
  const video = $("camera-video"), ws = live.ws;
  const rows = liveRows(), cols = Math.round(video.videoWidth * rows / video.videoHeight);
  live.canvas.width = cols;
  live.canvas.height = rows;
  live.canvas.getContext("2d").drawImage(video, 0, 0, cols, rows);
  live.inFlight++;
  live.canvas.toBlob((blob) => {
    if (live.ws === ws && ws.readyState === WebSocket.OPEN && blob) ws.send(blob);
    else live.inFlight = Math.max(0, live.inFlight - 1);
  }, "image/jpeg", 0.8);
}

// Answers lost (a frame the server could not stylise, a dropped connection
// message) would leave frames counted in flight and nothing to call pump again:
// while the camera is on, a watchdog calls it every second, and after 3 s
// without an answer it starts over.
function pump() {
  const video = $("camera-video");
  if (!live.ws || !live.ready) return;
  if (performance.now() - live.lastAnswer > 3000) live.inFlight = 0;  // answers lost: start over
  if (video.readyState < 2 || !video.videoWidth) { setTimeout(pump, 50); return; }
  while (live.inFlight < 2) sendFrame();
}

function onLiveMessage(event) {
  if (typeof event.data === "string") {
    const m = JSON.parse(event.data);
    if (m.error) showMessage(m.error);
    if (m.ready !== undefined) { live.ready = true; live.lastAnswer = performance.now(); pump(); }
    if (m.frame !== undefined) {
      const lost = m.dropped - live.dropped;  // frames the server dropped get no answer
      live.dropped = m.dropped;
      live.inFlight = Math.max(0, live.inFlight - lost);
      $("live-info").textContent = `${m.ms} ms a frame on the server, ${m.dropped} dropped`;
      document.body.dataset.liveFrames = String(m.frame);
      pump();
    }
    return;
  }
  live.inFlight = Math.max(0, live.inFlight - 1);
  live.lastAnswer = performance.now();
  showLiveFrame(event.data);
  live.times.push(performance.now());
  showFps();
  pump();
}

// One frame loads into #live at a time; one that comes meanwhile waits as the
// next (a newer one replaces it).  Replacing a frame still loading would cancel
// it, and a busy page would then show no new frame at all.  The body's
// data-live-rows is the height of the last frame shown (#live's naturalHeight
// reads 0 while the next one loads).
function showLiveFrame(blob) {
  if (live.loading) { live.next = blob; return; }
  live.loading = true;
  const url = URL.createObjectURL(blob), img = $("live");
  img.onload = img.onerror = () => {
    if (img.naturalHeight) document.body.dataset.liveRows = String(img.naturalHeight);
    if (live.url) URL.revokeObjectURL(live.url);
    live.url = url;
    live.loading = false;
    const next = live.next;
    live.next = null;
    if (next && live.ws) showLiveFrame(next);
  };
  img.src = url;
}

async function startCamera() {
  showMessage("");
  if (!chosenNetwork()) { showMessage("Choose a network first: the camera goes through a trained network."); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    showMessage(`The camera could not be started (${e.name}); allow this page to use it.`);
    return;
  }
  live.stream = stream;
  const video = $("camera-video");
  video.srcObject = stream;
  await video.play();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const folder = location.pathname.replace(/[^/]*$/, "");
  const ws = new WebSocket(`${scheme}//${location.host}${folder}api/live`);
  Object.assign(live, { ws: ws, inFlight: 0, times: [], ready: false, dropped: 0 });
  clearInterval(live.watchdog);
  live.watchdog = setInterval(() => { if (live.ws === ws && live.inFlight) pump(); }, 1000);
  ws.binaryType = "blob";
  ws.onopen = sendLiveSettings;
  ws.onmessage = onLiveMessage;
  ws.onclose = () => {
    if (live.ws !== ws) return;
    if (!live.ready && !$("message").textContent) showMessage("The server refused the live camera.");
    stopCamera();
  };
  $("live-panel").hidden = false;
  $("camera").textContent = "Stop camera";
  document.body.dataset.live = "on";
}

function stopCamera() {
  const ws = live.ws;
  live.ws = null;
  live.ready = false;
  clearInterval(live.watchdog);
  live.next = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
  if (live.stream) for (const track of live.stream.getTracks()) track.stop();
  live.stream = null;
  $("camera-video").srcObject = null;
  $("camera").textContent = "Camera";
  document.body.dataset.live = "off";
}

// ---- wiring ---------------------------------------------------------------

function wire() {
  $("content-input").onchange = (e) => { if (e.target.files[0]) setContent(e.target.files[0]); };
  $("style-input").onchange = (e) => { addStyles(Array.from(e.target.files)); e.target.value = ""; };
  dropZone($("content-drop"), (files) => setContent(files[0]));
  dropZone($("style-drop"), addStyles);
  $("preset").onchange = () => applyPreset($("preset").value);
  $("strength").oninput = showStrength;
  $("stylize").onclick = async () => {
    if ($("network").value) { stylizeWithNetwork(); return; }
    let body;
    try { body = await formData(); } catch (e) { showMessage(e.message); return; }
    start("api/jobs", { method: "POST", body: body }, false);
  };
  wireRegions();
  $("stop").onclick = () => { if (state.job) api(`api/jobs/${state.job}/stop`, { method: "POST" }).catch((e) => showMessage(e.message)); };
  $("continue").onclick = () => start(`api/jobs/${state.job}/continue`, { method: "POST" }, true);
  showStrength();
  loadPresets().catch((e) => showMessage(e.message));
  loadGallery().catch((e) => showMessage(e.message));
  $("network").onchange = () => { renderBlendSliders(); sendLiveSettings(); };
  $("camera").onclick = () => (live.ws ? stopCamera() : startCamera());
  $("steady").oninput = sendLiveSettings;
  $("live-rows").onchange = sendLiveSettings;
  loadNetworks().catch((e) => showMessage(e.message));
}

wire();
