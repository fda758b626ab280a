// segcli app: the page. Plain JS, no build step. Talks to segcli/webapp/server.py.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  info: null, sid: null, source: null, frame: 0, obj: 1, layer: "auto", zoom: 1, fit: true, playing: false,
  state: null, run: null, events: null, tracks: [], hiddenTracks: new Set(), hiddenClasses: new Set(),
  view: null, index: null, drawToken: 0, labels: {}, busy: 0, resultFrames: new Set(),
};

// ---- helpers ------------------------------------------------------------------------------
async function api(method, url, body, raw) {
  const opts = { method, headers: {} };
  if (raw !== undefined) { opts.body = raw; opts.headers["Content-Type"] = "application/octet-stream"; }
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  let res;
  try { res = await fetch(url, opts); } catch (e) { throw new Error("the segcli app server is not reachable"); }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

function showError(msg) { $("error-text").textContent = msg; $("error").hidden = false; }
function clearError() { $("error").hidden = true; }

async function busy(label, fn) {
  S.busy++; $("busy-text").textContent = label; $("busy").hidden = false;
  try { return await fn(); }
  catch (e) { showError(e.message || String(e)); return undefined; }
  finally { if (--S.busy <= 0) { S.busy = 0; $("busy").hidden = true; } }
}

function vocColor(i) {  // the PASCAL VOC palette, as the davis PNGs use
  let r = 0, g = 0, b = 0, c = i;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j); g |= ((c >> 1) & 1) << (7 - j); b |= ((c >> 2) & 1) << (7 - j); c >>= 3;
  }
  return [r, g, b];
}
const colorOf = (id) => vocColor(id > 255 ? (id % 255) + 1 : id);
const css = (rgb) => `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
const nFrames = () => (S.source && S.source.num_frames) || 1;

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error(`could not load ${url.split("?")[0]}`));
    im.src = url;
  });
}

// ---- sources --------------------------------------------------------------------------------
async function loadInfo(selectId) {
  S.info = await api("GET", "/api/info");
  const sel = $("source");
  sel.innerHTML = "";
  for (const s of S.info.sources) {
    const o = document.createElement("option");
    o.value = s.id; o.textContent = `${s.name} (${s.kind}, ${s.width}x${s.height}${s.num_frames ? ", " + s.num_frames + " frames" : ""})`;
    sel.appendChild(o);
  }
  $("model").textContent = `${S.info.weights} · ${S.info.device} ${S.info.precision} · feature cache ${S.info.cache.budget_mb} MB`;
  const formats = $("formats");
  if (!formats.children.length) {
    for (const f of S.info.formats) {
      const l = document.createElement("label");
      l.innerHTML = `<input type="checkbox" value="${f}"> ${f}`;
      formats.appendChild(l);
    }
  }
  renderVocab(S.info.vocabulary);
  const id = selectId || (S.info.sources[0] && S.info.sources[0].id);
  $("empty").hidden = !!id;
  $("stage").hidden = !id;
  if (id) { sel.value = id; await openSource(Number(id)); }
}

async function openSource(sid) {
  stopPlay();
  S.sid = sid; S.source = S.info.sources.find((s) => s.id === sid);
  S.obj = 1; S.view = null; S.index = null; S.resultFrames = new Set(); S.tracks = [];
  const n = nFrames();
  $("scrub").max = n - 1; $("frame-no").max = n - 1; $("frame-count").textContent = n;
  $("range-start").value = 0; $("range-end").value = ""; $("range-end").max = n;
  const video = S.source.kind !== "image";
  for (const id of ["retrack", "play", "prev", "next", "scrub", "frame-no", "range-start", "range-end"]) {
    $(id).disabled = !video;
  }
  $("track").textContent = video ? "track" : "segment";  // an image: the clicked objects become the result
  $("track").title = video ? "track the objects (vos) through the range" : "the clicked objects as results (export)";
  for (const c of [$("mask"), $("marks")]) { c.width = S.source.width; c.height = S.source.height; }
  applyZoom(true);
  await refreshState();
  if (S.state.run) { S.run = S.state.run; await loadResults(); if (S.run.status === "running") follow(S.run.id); }
  else { S.run = null; renderRun(); renderTracks(); }
  await showFrame(0);
}

async function refreshState() {
  S.state = await api("GET", `/api/sources/${S.sid}/state`);
  renderObjects();
}

// ---- the frame and its overlay ------------------------------------------------------------
let frameChain = Promise.resolve();
function showFrame(k) {
  k = Math.max(0, Math.min(nFrames() - 1, k | 0));
  S.frame = k;
  $("scrub").value = k; $("frame-no").value = k;
  const token = ++S.drawToken;
  frameChain = frameChain.then(() => drawFrame(k, token)).catch((e) => showError(e.message));
  return frameChain;
}

async function drawFrame(k, token) {
  if (token !== S.drawToken) return;
  const img = $("frame");
  const url = `/api/sources/${S.sid}/frames/${k}`;
  if (img.dataset.src !== url) {
    const im = await loadImage(url);
    if (token !== S.drawToken) return;
    img.src = im.src; img.dataset.src = url;
  }
  await drawOverlay(k, token);
}

function promptFrames() { return new Set((S.state && S.state.prompt_frames) || []); }

async function drawOverlay(k, token) {
  const layer = S.layer;
  const hasPrompts = promptFrames().has(k);
  const hasResult = S.run && S.resultFrames.has(k);
  let kind = null;
  if (layer === "prompts" || (layer === "auto" && (hasPrompts || !hasResult))) kind = hasPrompts ? "prompts" : null;
  else kind = hasResult ? "results" : null;
  let view = null, index = null;
  if (kind) {
    view = await api("GET", `/api/sources/${S.sid}/${kind}/${k}`);
    if (token !== S.drawToken) return;
    if (view.mask && view.segments.length) index = await readIndex(view.mask);
    if (token !== S.drawToken) return;
  }
  S.view = view ? { ...view, kind } : null;
  S.index = index;
  paintMask();
  drawMarks();
  if (kind === "prompts") updateLabels(view);
  document.body.dataset.overlay = `${k}:${kind || "none"}:${view ? view.segments.length : 0}`;
}

async function readIndex(url) {
  const im = await loadImage(url);
  const c = document.createElement("canvas");
  c.width = im.naturalWidth; c.height = im.naturalHeight;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(im, 0, 0);
  const rgba = ctx.getImageData(0, 0, c.width, c.height).data;
  const out = new Uint8Array(c.width * c.height);
  for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
  return { data: out, width: c.width, height: c.height };
}

function segmentVisible(seg) {
  if (!S.view || S.view.kind !== "results") return true;
  return !S.hiddenTracks.has(seg.id) && !S.hiddenClasses.has(seg.label || "(no label)");
}

function paintMask() {
  const c = $("mask"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (!S.index || !S.view) return;
  const { data, width, height } = S.index;
  const lut = new Array(256).fill(null);
  for (const seg of S.view.segments) if (segmentVisible(seg)) lut[seg.index] = colorOf(seg.id);
  const img = ctx.createImageData(width, height), px = img.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x, v = data[i];
      const col = lut[v];
      if (!col) continue;
      const edge = (x > 0 && data[i - 1] !== v) || (x < width - 1 && data[i + 1] !== v) ||
        (y > 0 && data[i - width] !== v) || (y < height - 1 && data[i + width] !== v);
      px[4 * i] = col[0]; px[4 * i + 1] = col[1]; px[4 * i + 2] = col[2]; px[4 * i + 3] = edge ? 255 : 120;
    }
  }
  ctx.putImageData(img, 0, 0);
}

function drawMarks(drag) {
  const c = $("marks"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const scale = Math.max(1, S.source ? S.source.width / 640 : 1);
  const prompts = (S.view && S.view.kind === "prompts" && S.view.prompts) || {};
  for (const [oid, p] of Object.entries(prompts)) {
    const col = css(colorOf(Number(oid)));
    ctx.lineWidth = 2 * scale;
    for (const [x1, y1, x2, y2] of p.boxes) { ctx.strokeStyle = col; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1); }
    for (const [x, y] of p.points) {
      ctx.beginPath(); ctx.arc(x, y, 4 * scale, 0, 2 * Math.PI);
      ctx.fillStyle = col; ctx.fill(); ctx.strokeStyle = "#fff"; ctx.stroke();
    }
  }
  if (drag) {
    ctx.setLineDash([6 * scale, 4 * scale]); ctx.lineWidth = 2 * scale; ctx.strokeStyle = css(colorOf(S.obj));
    ctx.strokeRect(drag.x1, drag.y1, drag.x2 - drag.x1, drag.y2 - drag.y1); ctx.setLineDash([]);
  }
}

// ---- zoom ---------------------------------------------------------------------------------
function applyZoom(fit) {
  if (!S.source) return;
  const vp = $("viewport");
  if (fit) {
    S.fit = true;
    S.zoom = Math.min((vp.clientWidth - 4) / S.source.width, (vp.clientHeight - 4) / S.source.height) || 1;
  }
  const st = $("stage");
  st.style.width = `${Math.round(S.source.width * S.zoom)}px`;
  st.style.height = `${Math.round(S.source.height * S.zoom)}px`;
  $("zoom-level").textContent = `${Math.round(S.zoom * 100)}%`;
}
function zoomBy(f) { S.fit = false; S.zoom = Math.max(0.1, Math.min(16, S.zoom * f)); applyZoom(false); }

function toImage(ev) {
  const r = $("marks").getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * S.source.width;
  const y = ((ev.clientY - r.top) / r.height) * S.source.height;
  return [Math.max(0, Math.min(S.source.width - 0.01, x)), Math.max(0, Math.min(S.source.height - 0.01, y))];
}

// ---- prompts ------------------------------------------------------------------------------
let dragStart = null;
function onPointerDown(ev) {
  if (ev.button !== 0 || !S.source) return;
  dragStart = { x: ev.clientX, y: ev.clientY, p: toImage(ev) };
  $("marks").setPointerCapture(ev.pointerId);
}
function onPointerMove(ev) {
  showTooltip(ev);
  if (!dragStart) return;
  const p = toImage(ev);
  drawMarks({ x1: Math.min(p[0], dragStart.p[0]), y1: Math.min(p[1], dragStart.p[1]),
    x2: Math.max(p[0], dragStart.p[0]), y2: Math.max(p[1], dragStart.p[1]) });
}
async function onPointerUp(ev) {
  if (!dragStart) return;
  const start = dragStart; dragStart = null;
  const moved = Math.hypot(ev.clientX - start.x, ev.clientY - start.y);
  const p = toImage(ev);
  const body = { frame: S.frame, object: S.obj };
  // whole pixels, so that the equivalent command line reads --point 232,160 --box 10,20,110,90
  if (moved < 5) body.point = start.p.map((v) => Math.floor(v));
  else {
    const W = S.source.width, H = S.source.height;
    const x1 = Math.floor(Math.min(p[0], start.p[0])), y1 = Math.floor(Math.min(p[1], start.p[1]));
    const x2 = Math.min(W, Math.ceil(Math.max(p[0], start.p[0]))), y2 = Math.min(H, Math.ceil(Math.max(p[1], start.p[1])));
    if (x2 - x1 < 1 || y2 - y1 < 1) { drawMarks(); return; }
    body.box = [x1, y1, x2, y2];
  }
  await busy("segmenting…", async () => {
    stopPlay();
    const view = await api("POST", `/api/sources/${S.sid}/prompts`, body);
    const t = view.timing;
    $("status").textContent = `mask in ${t.total_ms} ms (${t.cached ? "features cached" :
      "features " + t.features_ms + " ms"}, decoder ${t.decode_ms} ms)`;
    await afterPromptChange(view.frame);
  });
}

async function afterPromptChange(frame) {
  await refreshState();
  if (frame !== undefined && frame !== S.frame) await showFrame(frame);
  else await showFrame(S.frame);
}

function updateLabels(view) {
  for (const s of view.segments) S.labels[s.id] = s;
  renderObjects();
}

function renderObjects() {
  const box = $("objects");
  box.innerHTML = "";
  const objs = (S.state && S.state.objects) || [];
  const ids = objs.map((o) => o.id);
  if (!ids.includes(S.obj)) ids.push(S.obj);
  ids.sort((a, b) => a - b);
  for (const id of ids) {
    const o = objs.find((x) => x.id === id);
    const row = document.createElement("div");
    row.className = "obj" + (id === S.obj ? " selected" : "");
    row.dataset.id = id;
    const lab = S.labels[id];
    const frames = o ? [...new Set(o.prompts.map((p) => p.frame))].join(", ") : "";
    const what = lab ? (lab.label ? `${lab.label} ${lab.score.toFixed(2)}` : `score ${lab.score.toFixed(2)}`) : "";
    row.innerHTML = `<span class="swatch" style="background:${css(colorOf(id))}"></span>
      <span class="info">#${id} ${what ? "· " + what : ""}<br><span class="muted">${o ? "frames " + frames :
      "next clicks go here"}</span></span>`;
    if (o) {
      const del = document.createElement("button");
      del.textContent = "×"; del.title = `remove object ${id}`;
      del.onclick = (e) => { e.stopPropagation(); busy("removing…", async () => {
        await api("POST", `/api/sources/${S.sid}/clear`, { object: id }); delete S.labels[id]; await afterPromptChange();
      }); };
      row.appendChild(del);
    }
    row.onclick = () => { S.obj = id; renderObjects(); };
    box.appendChild(row);
  }
}

function newObject() {
  const ids = ((S.state && S.state.objects) || []).map((o) => o.id);
  S.obj = Math.min(255, Math.max(0, S.obj, ...ids) + 1);
  renderObjects();
}

// ---- vocabulary ----------------------------------------------------------------------------
function renderVocab(v) {
  $("vocab-info").textContent = v.labelled ? `labels: ${v.classes.length} classes (${v.args})` :
    "no vocabulary: objects get an objectness score; type classes to label them";
}

// ---- runs ---------------------------------------------------------------------------------
async function startRun(body) {
  await busy("starting…", async () => {
    stopPlay();
    const run = await api("POST", `/api/sources/${S.sid}/runs`, body);
    S.run = run; S.tracks = []; S.hiddenTracks.clear(); S.hiddenClasses.clear();
    if (body.retrack_from === undefined || body.retrack_from === null) S.resultFrames = new Set();
    else S.resultFrames = new Set([...S.resultFrames].filter((k) => k < body.retrack_from));
    renderRun(); renderTracks();
    follow(run.id);
  });
}

function rangeBody(task) {
  const body = { task, mode: $("mode").value, start: Number($("range-start").value || 0) };
  if ($("range-end").value !== "") body.end = Number($("range-end").value);
  return body;
}

let tracksTimer = null;
function follow(rid) {
  if (S.events) S.events.close();
  const es = new EventSource(`/api/runs/${rid}/events`);
  S.events = es;
  es.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    S.run.pushed = d.pushed; S.run.total = d.total;
    renderRun(`${d.pushed}${d.total ? "/" + d.total : ""} frames read, ${d.fps} fps`);
  });
  es.addEventListener("frame", (e) => {
    const d = JSON.parse(e.data);
    S.resultFrames.add(d.frame);
    S.run.frames_done = d.done;
    if (d.frame === S.frame && !S.playing) showFrame(S.frame);
    if (!tracksTimer) tracksTimer = setTimeout(() => { tracksTimer = null; loadTracks(); }, 700);
  });
  for (const type of ["done", "error", "cancelled"]) {
    es.addEventListener(type, async (e) => {
      es.close(); if (S.events === es) S.events = null;
      const d = JSON.parse(e.data);
      S.run = d.run;
      if (type === "error") showError(d.message || "the run failed");
      await loadResults();
      if (!S.playing) showFrame(S.frame);
    });
  }
  es.onerror = async () => {
    // the stream dropped: ask where the run is, so the page never waits forever
    try {
      const r = await api("GET", `/api/runs/${rid}`);
      if (r.status !== "running") { es.close(); S.run = r; await loadResults(); if (r.error) showError(r.error); }
    } catch (err) { es.close(); showError(err.message); S.run && (S.run.status = "error"); renderRun(); }
  };
}

async function loadResults() {
  await loadTracks();
  renderRun();
}

async function loadTracks() {
  const t = await api("GET", `/api/sources/${S.sid}/tracks`);
  if (t.run) S.run = { ...S.run, ...t.run };
  S.tracks = t.tracks;
  for (const tr of t.tracks) for (const [a, b] of tr.spans) for (let k = a; k <= b; k++) S.resultFrames.add(k);
  renderTracks();
  renderRun();
}

function renderRun(extra) {
  const r = S.run, running = r && r.status === "running";
  $("cancel").disabled = !running;
  for (const id of ["track", "retrack", "auto-run", "vocab-set"]) {
    $(id).disabled = running || (S.source && S.source.kind === "image" && (id === "retrack"));
  }
  if (!r) { $("run-status").textContent = ""; $("progress").value = 0; return; }
  const total = r.total || nFrames();
  $("progress").max = total;
  $("progress").value = r.status === "running" ? (r.pushed || 0) : total;
  let text = `${r.task}: ${r.status}`;
  if (r.status === "running") text += extra ? ` · ${extra}` : "";
  else text += ` · ${r.frames_done} frames in ${r.seconds} s`;
  if (r.error) text += ` · ${r.error}`;
  if (r.notices && r.notices.length) text += ` · ${r.notices[r.notices.length - 1]}`;
  $("run-status").textContent = text;
  $("run-status").dataset.status = r.status;
  const fmt = { vos: "davis", vis: "ytvis", vps: "panoptic", vss: "panoptic" }[r.task] || "jsonl";
  if (![...$("formats").querySelectorAll("input")].some((i) => i.checked)) {
    const box = $("formats").querySelector(`input[value="${fmt}"]`);
    if (box) box.checked = true;
  }
}

function renderTracks() {
  const box = $("tracks"), classes = $("classes");
  box.innerHTML = ""; classes.innerHTML = "";
  const labels = [...new Set(S.tracks.map((t) => t.label || "(no label)"))];
  if (labels.length > 1 || (labels.length === 1 && labels[0] !== "(no label)")) {
    for (const lab of labels) {
      const l = document.createElement("label");
      const cb = document.createElement("input");
      cb.type = "checkbox"; cb.checked = !S.hiddenClasses.has(lab);
      cb.onchange = () => { cb.checked ? S.hiddenClasses.delete(lab) : S.hiddenClasses.add(lab); paintMask(); };
      l.append(cb, " " + lab); classes.appendChild(l);
    }
  }
  const n = nFrames();
  for (const t of S.tracks) {
    const row = document.createElement("div");
    row.className = "track"; row.dataset.id = t.id;
    const cb = document.createElement("input");
    cb.type = "checkbox"; cb.checked = !S.hiddenTracks.has(t.id);
    cb.onchange = () => { cb.checked ? S.hiddenTracks.delete(t.id) : S.hiddenTracks.add(t.id); paintMask(); };
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = css(colorOf(t.id));
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `#${t.id} ${t.label || ""} ${t.score.toFixed(2)} · frames ${t.first}–${t.last}`;
    const tl = document.createElement("canvas");
    tl.width = 300; tl.height = 8; tl.title = "click: go to that frame";
    const ctx = tl.getContext("2d");
    ctx.fillStyle = css(colorOf(t.id));
    for (const [a, b] of t.spans) ctx.fillRect((a / n) * 300, 0, Math.max(1, ((b - a + 1) / n) * 300), 8);
    tl.onclick = (e) => { const r = tl.getBoundingClientRect(); showFrame(Math.floor(((e.clientX - r.left) / r.width) * n)); };
    row.append(cb, sw, name, tl);
    box.appendChild(row);
  }
}

// ---- hover --------------------------------------------------------------------------------
function showTooltip(ev) {
  const tip = $("tooltip");
  if (!S.index || !S.view || dragStart) { tip.hidden = true; return; }
  const [x, y] = toImage(ev);
  const v = S.index.data[Math.floor(y) * S.index.width + Math.floor(x)];
  const seg = v ? S.view.segments.find((s) => s.index === v) : null;
  if (!seg || !segmentVisible(seg)) { tip.hidden = true; return; }
  tip.textContent = `id ${seg.id}${seg.label ? " · " + seg.label : ""} · score ${seg.score.toFixed(3)}`;
  tip.style.left = `${ev.clientX + 12}px`; tip.style.top = `${ev.clientY + 12}px`; tip.hidden = false;
}

// ---- play ---------------------------------------------------------------------------------
async function play() {
  if (S.playing) { stopPlay(); return; }
  if (!S.source || nFrames() < 2) return;
  S.playing = true; $("play").textContent = "❚❚";
  if (S.frame >= nFrames() - 1) await showFrame(0);
  const dt = 1000 / (S.source.fps || 10);
  while (S.playing && S.frame < nFrames() - 1) {
    const t0 = performance.now();
    await showFrame(S.frame + 1);
    const wait = dt - (performance.now() - t0);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  stopPlay();
}
function stopPlay() { S.playing = false; $("play").textContent = "▶"; }

// ---- export -------------------------------------------------------------------------------
async function doExport() {
  const formats = [...$("formats").querySelectorAll("input:checked")].map((i) => i.value);
  $("export-link").hidden = true;
  await busy("exporting…", async () => {
    const r = await api("POST", `/api/sources/${S.sid}/export`, { formats });
    const a = $("export-link");
    a.href = r.url; a.download = r.filename; a.textContent = `download ${r.filename} (${r.files.length} files)`;
    a.hidden = false;
    $("command").textContent = r.command; $("command").hidden = false;
    $("export-note").textContent = r.note || "";
  });
}

// ---- wiring -------------------------------------------------------------------------------
function wire() {
  $("error-close").onclick = clearError;
  $("source").onchange = () => busy("opening…", () => openSource(Number($("source").value)));
  $("upload").onchange = async () => {
    const f = $("upload").files[0];
    if (!f) return;
    if (S.info && f.size > S.info.max_upload_mb * 1048576) {
      showError(`${f.name} is larger than the upload limit of ${S.info.max_upload_mb} MB`); return;
    }
    await busy(`uploading ${f.name}…`, async () => {
      const s = await api("POST", `/api/upload?filename=${encodeURIComponent(f.name)}`, undefined, f);
      await loadInfo(s.id);
    });
    $("upload").value = "";
  };
  const marks = $("marks");
  marks.addEventListener("pointerdown", onPointerDown);
  marks.addEventListener("pointermove", onPointerMove);
  marks.addEventListener("pointerup", onPointerUp);
  marks.addEventListener("pointerleave", () => { $("tooltip").hidden = true; });
  marks.addEventListener("contextmenu", (e) => e.preventDefault());
  $("viewport").addEventListener("wheel", (e) => { if (e.ctrlKey) { e.preventDefault(); zoomBy(e.deltaY < 0 ? 1.15 : 1 / 1.15); } },
    { passive: false });
  $("zoom-in").onclick = () => zoomBy(1.25);
  $("zoom-out").onclick = () => zoomBy(0.8);
  $("zoom-fit").onclick = () => applyZoom(true);
  window.addEventListener("resize", () => { if (S.fit) applyZoom(true); });
  $("scrub").oninput = () => { stopPlay(); showFrame(Number($("scrub").value)); };
  $("frame-no").onchange = () => { stopPlay(); showFrame(Number($("frame-no").value)); };
  $("prev").onclick = () => { stopPlay(); showFrame(S.frame - 1); };
  $("next").onclick = () => { stopPlay(); showFrame(S.frame + 1); };
  $("play").onclick = play;
  $("layer").onchange = () => { S.layer = $("layer").value; showFrame(S.frame); };
  $("new-object").onclick = newObject;
  $("undo").onclick = () => busy("undoing…", async () => {
    const v = await api("POST", `/api/sources/${S.sid}/undo`); await afterPromptChange(v.frame);
  });
  $("clear").onclick = () => busy("clearing…", async () => {
    await api("POST", `/api/sources/${S.sid}/clear`, {}); S.labels = {}; S.obj = 1; await afterPromptChange();
  });
  $("vocab-set").onclick = () => busy("embedding the vocabulary…", async () => {
    const v = await api("POST", "/api/vocab", { vocab: $("vocab").value });
    renderVocab(v); S.labels = {}; await afterPromptChange();
  });
  $("vocab").addEventListener("keydown", (e) => { if (e.key === "Enter") $("vocab-set").click(); });
  $("track").onclick = () => startRun(rangeBody("vos"));
  $("retrack").onclick = () => startRun({ task: "vos", mode: $("mode").value, retrack_from: S.frame });
  $("auto-run").onclick = () => startRun(rangeBody($("auto-task").value));
  $("cancel").onclick = () => S.run && busy("cancelling…", () => api("POST", `/api/runs/${S.run.id}/cancel`));
  $("export").onclick = doExport;
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === " ") { e.preventDefault(); play(); }
    else if (e.key === "ArrowLeft") { stopPlay(); showFrame(S.frame - 1); }
    else if (e.key === "ArrowRight") { stopPlay(); showFrame(S.frame + 1); }
    else if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); $("undo").click(); }
  });
}

wire();
busy("loading…", () => loadInfo()).then(() => { document.body.dataset.ready = "1"; });
