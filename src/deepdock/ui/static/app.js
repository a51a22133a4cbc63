// The deepdock dashboard: a hash-routed page per noun over the REST API (/api/v1), with the token of
// `deepdock user add` kept in this tab's sessionStorage. Everything a server string reaches goes through
// esc(): job names, reasons and logs are user input.
import { drawChart } from "./chart.js";

const API = "/api/v1";
const app = document.getElementById("app");
let token = sessionStorage.getItem("deepdock-token");
let cleanup = [];  // what the current page started (timers, streams): stopped on navigation

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const gib = (b) => (b / 1024 ** 3).toFixed(1) + " GiB";
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const ago = (s) => (s == null ? "—" : s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
const status = (s) => `<span class="status ${esc(String(s).toUpperCase())}" data-status="${esc(s)}">${esc(s)}</span>`;
const pct = (used, total) => (total > 0 ? Math.min(100, (100 * used) / total) : 0);
const bar = (used, total) => `<div class="bar"><span style="width:${pct(used, total).toFixed(1)}%"></span></div>`;

class ApiError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    ...options, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401) { logout(); throw new ApiError("log in again"); }
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error.message; } catch { /* not JSON */ }
    throw new ApiError(message);
  }
  return response.status === 204 ? null : response.json();
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
async function stream(path, onEvent, signal) {
  const response = await fetch(API + path, { headers: { Authorization: `Bearer ${token}` }, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      const kind = /^event: (.*)$/m.exec(block), data = /^data: (.*)$/m.exec(block);
      if (kind && data) onEvent(kind[1], JSON.parse(data[1]));
    }
  }
}

async function streamText(path, onText, signal) {
  const response = await fetch(API + path, { headers: { Authorization: `Bearer ${token}` }, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(decoder.decode(value, { stream: true }));
  }
}

function logout() { sessionStorage.removeItem("deepdock-token"); token = null; location.hash = "#/login"; }

// A page that refreshes itself: its body runs now and every ``ms`` until the user navigates away.
function every(ms, fn) {
  let stopped = false;
  const run = async () => {
    try { await fn(); } catch (err) { if (!stopped) app.innerHTML = `<div class="error">${esc(err.message)}</div>`; }
  };
  run();
  const id = setInterval(run, ms);
  cleanup.push(() => { stopped = true; clearInterval(id); });
}

// -- pages ------------------------------------------------------------------------------------------
async function loginPage() {
  app.innerHTML = `<div class="login card"><h1>Log in to deepdock</h1>
    <p class="muted">Paste an API token (<code>deepdock user add</code> prints one; the admin's is in the server's config.json).</p>
    <form id="login"><input id="token" type="password" placeholder="dd_..." autocomplete="off"><button>Log in</button></form>
    <div id="login-error" class="error"></div></div>`;
  document.getElementById("login").onsubmit = async (e) => {
    e.preventDefault();
    token = document.getElementById("token").value.trim();
    try {
      await api("/me");
      sessionStorage.setItem("deepdock-token", token);
      location.hash = "#/overview";
    } catch (err) { document.getElementById("login-error").textContent = `not accepted: ${err.message}`; }
  };
}

async function overviewPage() {
  every(2000, async () => {
    const [o, services] = await Promise.all([api("/overview"), api("/services")]);
    const c = o.capacity;
    const statuses = {};
    for (const p of o.projects) for (const [s, n] of Object.entries(p.jobs)) statuses[s] = (statuses[s] || 0) + n;
    app.innerHTML = `<h1>Overview</h1>
      <div class="cards">
        <div class="card"><div class="muted">Nodes ready</div><div class="big" id="nodes-ready">${c.nodes_ready} / ${c.nodes}</div></div>
        <div class="card"><div class="muted">CPUs allocated</div><div class="big">${c.allocated_cpus.toFixed(1)} / ${c.cpus}</div>${bar(c.allocated_cpus, c.cpus)}</div>
        <div class="card"><div class="muted">Memory allocated</div><div class="big">${gib(c.allocated_memory)} / ${gib(c.memory)}</div>${bar(c.allocated_memory, c.memory)}</div>
        <div class="card"><div class="muted">GPUs allocated</div><div class="big">${c.allocated_gpus.toFixed(2)} / ${c.gpus}</div>${bar(c.allocated_gpus, c.gpus)}</div>
      </div>
      <h2>Jobs by status</h2><div class="cards">${Object.entries(statuses).map(([s, n]) =>
        `<div class="card">${status(s)} <span class="big">${n}</span></div>`).join("") || '<p class="muted">no jobs yet</p>'}</div>
      <h2>Queue by project</h2><table><tr><th>project</th><th>queued</th><th>longest wait</th><th>running CPUs / GPUs</th></tr>
      ${o.projects.map((p) => `<tr><td>${esc(p.name)}</td><td>${p.queued}</td><td>${ago(p.oldest_wait_s)}</td>
        <td>${p.used_cpus} / ${p.used_gpus}</td></tr>`).join("")}</table>
      <h2>Services</h2><table><tr><th>service</th><th>model</th><th>status</th><th>ready</th><th>requests/s</th><th>p99</th><th>traffic</th></tr>
      ${services.map((s) => `<tr><td><a href="#/services/${esc(s.name)}">${esc(s.name)}</a></td><td>${esc(s.model)}</td>
        <td>${status(s.status)}</td><td>${s.ready_replicas} / ${s.desired_replicas}</td>
        <td data-rps="${esc(s.name)}">${s.rps == null ? "—" : s.rps.toFixed(1)}</td><td>${s.p99_ms == null ? "—" : s.p99_ms.toFixed(1) + " ms"}</td>
        <td>${traffic(s.traffic)}</td></tr>`).join("")}</table>`;
  });
}

const PAGE = 100;
const GPU_CHART_POINTS = 120;  // per device on the nodes page's first load: a point every 30 s of the hour
async function jobsPage(query) {
  const f = { status: query.get("status") || "", project: query.get("project") || "", user: query.get("user") || "",
    name: query.get("name") || "" };
  app.innerHTML = `<h1>Jobs</h1><form class="filters" id="filters">
      <select name="status"><option value="">any status</option>${["QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"].map((s) =>
        `<option ${s === f.status ? "selected" : ""}>${s}</option>`).join("")}</select>
      <input name="project" placeholder="project" value="${esc(f.project)}"><input name="user" placeholder="user" value="${esc(f.user)}">
      <input name="name" placeholder="name" value="${esc(f.name)}">
      <button>Filter</button></form>
    <table id="jobs"><thead><tr><th>id</th><th>name</th><th>project</th><th>user</th><th>status</th><th>submitted</th><th>wait</th><th>runtime</th></tr></thead><tbody></tbody></table>
    <button id="more">More</button>`;
  document.getElementById("filters").onsubmit = (e) => {
    e.preventDefault();
    const params = new URLSearchParams([...new FormData(e.target)].filter(([, v]) => v));
    location.hash = `#/jobs?${params}`;
  };
  const body = app.querySelector("#jobs tbody");
  let before = null;
  const params = () => {
    const p = new URLSearchParams({ limit: PAGE });
    for (const [k, v] of Object.entries(f)) if (v) p.set(k, v);
    if (before) p.set("before", before);
    return p;
  };
  const rows = (jobs) => jobs.map((j) => {
    const wait = (j.started_at || Date.now() / 1000) - j.submitted_at;
    const runtime = j.started_at ? (j.finished_at || Date.now() / 1000) - j.started_at : null;
    return `<tr data-job="${esc(j.id)}"><td><a href="#/jobs/${esc(j.id)}">${esc(j.id)}</a></td><td>${esc(j.name)}</td><td>${esc(j.project)}</td>
      <td>${esc(j.user)}</td><td>${status(j.status)}</td><td>${when(j.submitted_at)}</td><td>${ago(wait)}</td><td>${ago(runtime)}</td></tr>`;
  }).join("");
  const more = async () => {
    const jobs = await api(`/jobs?${params()}`);
    body.insertAdjacentHTML("beforeend", rows(jobs));
    if (jobs.length) before = jobs[jobs.length - 1].submitted_at;
    document.getElementById("more").hidden = jobs.length < PAGE;
  };
  document.getElementById("more").onclick = more;
  await more();
  app.dataset.ready = "jobs";
  // Live: the first page's rows are refreshed in place (statuses move; new jobs appear at the top).
  const timer = setInterval(async () => {
    if (before === null) return;
    const p = params(); p.delete("before");
    const fresh = await api(`/jobs?${p}`);
    const shown = new Set([...body.querySelectorAll("tr")].map((r) => r.dataset.job));
    for (const j of fresh) {
      const row = body.querySelector(`tr[data-job="${CSS.escape(j.id)}"]`);
      if (row) row.outerHTML = rows([j]);
      else if (!shown.has(j.id)) body.insertAdjacentHTML("afterbegin", rows([j]));
    }
  }, 2000);
  cleanup.push(() => clearInterval(timer));
}

async function jobPage(id) {
  const job = await api(`/jobs/${encodeURIComponent(id)}`);
  const [params, artifacts] = await Promise.all([
    api(`/jobs/${job.id}/params`).catch(() => ({ params: {} })), api(`/jobs/${job.id}/artifacts`).catch(() => [])]);
  app.innerHTML = `<h1>Job ${esc(job.id)} <span class="muted">${esc(job.name)}</span></h1>
    <div class="cards">
      <div class="card"><div class="muted">Status</div><div class="big" id="job-status">${status(job.status)}</div>
        <div id="job-reason" class="muted">${esc(job.status_reason)}</div><div id="job-pending"></div>
        <p><button class="danger" id="stop">Stop</button></p></div>
      <div class="card"><div class="muted">Project / user</div><div>${esc(job.project)} / ${esc(job.user)}</div>
        <div class="muted">Resources per replica</div><div>${job.cpus} CPUs, ${gib(job.memory)}, ${job.gpus} GPUs × ${job.replicas}</div>
        <div class="muted">Image</div><div>${esc(job.image || "—")}</div></div>
      <div class="card"><div class="muted">Submitted</div><div>${when(job.submitted_at)}</div>
        <div class="muted">Started / finished</div><div>${when(job.started_at)} / ${when(job.finished_at)}</div></div>
      <div class="card" id="usage"><div class="muted">Container use (last sample)</div>${usage(job.usage)}</div>
      ${job.held_gpus.length ? `<div class="card" id="held-gpus"><div class="muted">GPUs held (last reading)</div>${job.held_gpus.map((g) =>
        `<div data-held-gpu="${esc(g.node)}/${g.index}">rank ${g.rank} on ${esc(g.node)}, GPU ${g.index}: ${g.sampled_at == null ? "no reading yet"
          : `${g.utilization_percent == null ? "—" : Math.round(g.utilization_percent) + "%"} busy, memory ${g.memory_used == null ? "—" : gib(g.memory_used)}`}</div>`).join("")}</div>` : ""}
    </div>
    <h2>Container use <span class="muted">(every usage round; x: seconds)</span></h2>
    <div class="pair"><div><h3>CPU (% of one CPU)</h3><canvas class="chart" data-usage-chart="cpu"></canvas></div>
      <div><h3>Memory (MiB)</h3><canvas class="chart" data-usage-chart="memory"></canvas></div></div>
    <h2>Metrics</h2><form class="filters" id="overlay"><input name="other" placeholder="overlay another job's id"><button>Compare</button></form>
    <div id="charts"><p class="muted">no metrics yet</p></div>
    <h2>Timeline</h2><table id="timeline"><tr><th>at</th><th>from</th><th>to</th><th>attempt</th><th>reason</th></tr>
      ${job.events.map((e) => `<tr><td>${when(e.at)}</td><td>${esc(e.from_status || "")}</td><td>${status(e.to_status)}</td>
        <td>${e.attempt ?? ""}</td><td>${esc(e.reason)}</td></tr>`).join("")}</table>
    <h2>Attempts and placement</h2><table><tr><th>attempt</th><th>status</th><th>replicas (rank → node, GPUs)</th><th>reason</th></tr>
      ${job.attempt_list.map((a) => `<tr><td>${a.number}</td><td>${status(a.status)}</td><td>${a.replicas.map((r) =>
        `${r.rank} → ${esc(r.node)}${r.gpu_indices.length ? ` [${r.gpu_indices.join(",")}]` : ""}`).join("; ")}</td><td>${esc(a.reason)}</td></tr>`).join("")}</table>
    <h2>Logs</h2><pre class="logs" id="logs"></pre>
    <h2>Params</h2><table>${Object.entries(params.params).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(JSON.stringify(v))}</td></tr>`).join("") || '<tr><td class="muted">none</td></tr>'}</table>
    <h2>Artifacts</h2><table id="artifacts">${artifacts.map((a) => `<tr><td><a href="#" data-path="${esc(a.path)}">${esc(a.path)}</a></td><td>${a.size} B</td></tr>`).join("") || '<tr><td class="muted">none</td></tr>'}</table>`;
  const controller = new AbortController();
  cleanup.push(() => controller.abort());
  showPending(job.pending_reason);
  document.getElementById("stop").onclick = async () => {
    try { await api(`/jobs/${job.id}/stop`, { method: "POST" }); } catch (err) { alert(err.message); }
  };
  app.querySelectorAll("#artifacts a[data-path]").forEach((a) => { a.onclick = (e) => { e.preventDefault(); download(job.id, a.dataset.path); }; });
  const logs = document.getElementById("logs");
  streamText(`/jobs/${job.id}/logs?follow=true`, (text) => {
    const bottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.textContent += text;
    if (bottom) logs.scrollTop = logs.scrollHeight;
  }, controller.signal).catch(() => {});
  const series = {};  // name → {steps, values}
  const overlays = {};  // other job → {name → {steps, values}}
  const width = Math.max(200, document.getElementById("charts").clientWidth);
  const redraw = () => {
    const charts = document.getElementById("charts");
    const names = Object.keys(series).sort();
    if (!names.length) return;
    for (const name of names) {
      let canvas = charts.querySelector(`canvas[data-metric="${CSS.escape(name)}"]`);
      if (!canvas) {
        if (!charts.querySelector("canvas")) charts.innerHTML = "";
        charts.insertAdjacentHTML("beforeend", `<h3>${esc(name)} <span class="muted" data-count="${esc(name)}"></span></h3><canvas class="chart" data-metric="${esc(name)}"></canvas>`);
        canvas = charts.querySelector(`canvas[data-metric="${CSS.escape(name)}"]`);
      }
      const lines = [{ label: job.id, ...series[name] }];
      for (const [other, theirs] of Object.entries(overlays)) if (theirs[name]) lines.push({ label: other, ...theirs[name] });
      drawChart(canvas, lines);
      canvas.dataset.points = series[name].steps.length;
      canvas.dataset.lastStep = series[name].steps[series[name].steps.length - 1];
      charts.querySelector(`[data-count="${CSS.escape(name)}"]`).textContent = `(${series[name].total} points)`;
    }
  };
  stream(`/jobs/${job.id}/live?max_points=${width}`, (kind, data) => {
    if (kind === "status") {
      document.getElementById("job-status").innerHTML = status(data.status);
      document.getElementById("job-reason").textContent = data.status_reason;
      showPending(data.pending_reason);
    } else if (kind === "metrics") {
      const s = series[data.name] && !data.fresh ? series[data.name] : (series[data.name] = { steps: [], values: [], total: 0 });
      s.steps.push(...data.steps); s.values.push(...data.values); s.total = data.fresh ? data.total : s.total + data.steps.length;
      redraw();
    }
  }, controller.signal).catch(() => {});
  // Its own timer, not every(): a failed read leaves the page as it is (the next round retries).
  const drawUsage = () => api(`/jobs/${job.id}/usage`).then(drawUsageCharts).catch(() => {});
  drawUsage();
  const usageTimer = setInterval(drawUsage, 5000);
  cleanup.push(() => clearInterval(usageTimer));
  document.getElementById("overlay").onsubmit = async (e) => {
    e.preventDefault();
    const other = new FormData(e.target).get("other").trim();
    if (!other) return;
    const summary = await api(`/jobs/${encodeURIComponent(other)}/metrics`);
    overlays[other] = {};
    for (const s of summary.series) {
      overlays[other][s.name] = await api(`/jobs/${encodeURIComponent(other)}/metrics/${encodeURIComponent(s.name)}?max_points=${width}`);
    }
    redraw();
  };
  app.dataset.ready = "job";
}

// A job's container use over time: one line per rank, CPU and memory.
function drawUsageCharts(samples) {
  const start = samples.length ? samples[0].at : 0;
  const lines = (field) => {
    const by = {};
    for (const x of samples) {
      (by[x.rank] ||= { label: `rank ${x.rank}`, steps: [], values: [] });
      by[x.rank].steps.push(Math.round(x.at - start)); by[x.rank].values.push(field(x));
    }
    return Object.values(by);
  };
  for (const [name, field] of [["cpu", (x) => x.cpu_percent], ["memory", (x) => x.memory_usage / 1024 ** 2]]) {
    const canvas = document.querySelector(`canvas[data-usage-chart=${name}]`);
    if (!canvas) continue;
    drawChart(canvas, lines(field));
    canvas.dataset.points = samples.length;
  }
}

function usage(samples) {
  if (!samples || !samples.length) return '<div class="muted">no sample (not running, or not sampled yet)</div>';
  return samples.map((u) => `<div data-usage="${esc(u.node)}">${esc(u.job ? u.job + " on " : "")}${esc(u.node)}: CPU ${u.cpu_percent.toFixed(0)}%,
    memory ${(u.memory_usage / 1024 ** 2).toFixed(0)} MiB${u.memory_limit ? ` of ${(u.memory_limit / 1024 ** 2).toFixed(0)} MiB` : ""}</div>`).join("");
}

function showPending(reason) {
  const el = document.getElementById("job-pending");
  el.innerHTML = reason ? `<div id="pending-reason"><b>Why pending:</b> ${esc(reason.message)} <span class="muted">(${esc(reason.code)}, queue position ${reason.position})</span></div>` : "";
}

async function download(jobId, path) {
  const response = await fetch(`${API}/jobs/${jobId}/artifacts/${path.split("/").map(encodeURIComponent).join("/")}`,
    { headers: { Authorization: `Bearer ${token}` } });
  const url = URL.createObjectURL(await response.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: path.split("/").pop() });
  a.click(); URL.revokeObjectURL(url);
}

async function nodesPage() {
  // GPU history: the last hour once, downsampled to about a chart's width per device (a 400-GPU cluster
  // keeps ~144,000 samples an hour), then every 2 s only what is newer, appended per device.
  const gpuSeries = new Map();
  let gpuSince = null;
  every(2000, async () => {
    const [nodes, history, fresh] = await Promise.all([api("/nodes"), api("/nodes/usage"),
      api(`/nodes/gpus/usage?${gpuSince == null ? `max_points=${GPU_CHART_POINTS}` : `since=${gpuSince}`}`)]);
    for (const s of fresh) {
      const key = `${s.node}/${s.index}`, old = gpuSeries.get(key);
      const columns = ["at", "utilization_percent", "memory_used"];
      const merged = old ? { ...s, ...Object.fromEntries(columns.map((c) => [c, old[c].concat(s[c])])) } : s;
      const keep = Math.max(0, merged.at.findIndex((at) => at > merged.at[merged.at.length - 1] - 3600));
      gpuSeries.set(key, { ...merged, ...Object.fromEntries(columns.map((c) => [c, merged[c].slice(keep)])) });
      if (s.at.length) gpuSince = Math.max(gpuSince ?? 0, s.at[s.at.length - 1]);
    }
    app.innerHTML = `<h1>Nodes</h1><div class="cards">${nodes.map((n) => `<div class="card" data-node="${esc(n.name)}">
      <b>${esc(n.name)}</b> ${status(n.status)} <div class="muted">${esc(n.address)} · Docker ${esc(n.engine_version)}</div>
      <div>CPUs ${n.allocated_cpus.toFixed(1)} / ${n.cpus}</div>${bar(n.allocated_cpus, n.cpus)}
      <div>Memory ${gib(n.allocated_memory)} / ${gib(n.memory)}</div>${bar(n.allocated_memory, n.memory)}
      <div>GPUs ${n.allocated_gpus.toFixed(2)} / ${n.gpus.length}</div>
      <div class="gpus">${n.gpus.map(gpuTile).join("") || '<span class="muted">no GPUs</span>'}</div>
      ${n.gpus.length ? `<canvas class="chart small" data-gpu-usage="${esc(n.name)}" title="Utilization (%) of each GPU, from the node's NVIDIA tools"></canvas>` : ""}
      <div class="muted" style="margin-top:6px">Jobs' container use</div>${usage(n.usage.map((u) => ({ ...u, job: u.job || "another project's job" })))}
      <canvas class="chart small" data-node-usage="${esc(n.name)}" title="CPU (% of one CPU) of the node's job containers"></canvas>
      ${n.last_error ? `<div class="error">${esc(n.last_error)}</div>` : ""}</div>`).join("")}</div>`;
    drawNodeUsage(history);
    drawGpuUsage([...gpuSeries.values()]);
  });
}

// One GPU of the map: the fill is what jobs hold of it (allocation); the text is what the device does
// (the NVIDIA tools' last reading), "—" where there is no recent reading.
function gpuTile(g) {
  const used = g.holders.reduce((t, h) => t + h.share, 0);
  const who = g.holders.map((h) => (h.job ? `${h.job} (${h.share})` : `another project (${h.share})`)).join(", ");
  const util = g.utilization_percent == null ? "—" : `${Math.round(g.utilization_percent)}%`;
  const memory = g.memory_used == null ? "—" : `${Math.round((100 * g.memory_used) / g.memory)}%`;
  const reading = g.sampled_at == null ? "no reading yet"
    : `utilization ${util}, memory ${g.memory_used == null ? "—" : gib(g.memory_used)} of ${gib(g.memory)}`
      + `${g.temperature_c == null ? "" : `, ${g.temperature_c} °C`}${g.power_w == null ? "" : `, ${g.power_w} W`}`;
  return `<div class="gpu" title="GPU ${g.index} ${esc(g.model)}: ${esc(who || "free")}; ${reading}" data-gpu="${g.index}"
    data-used="${used}" data-util="${g.utilization_percent ?? ""}" data-mem-used="${g.memory_used ?? ""}">
    <div class="fill" style="height:${Math.min(100, used * 100)}%"></div>
    <div class="label">${g.index} ${esc(g.model)}<br><b>${util}</b> util<br>${memory} mem</div></div>`;
}

// Each GPU's utilization over the last hour, one line per device of the node.
function drawGpuUsage(series) {
  for (const canvas of document.querySelectorAll("canvas[data-gpu-usage]")) {
    const mine = series.filter((s) => s.node === canvas.dataset.gpuUsage).sort((a, b) => a.index - b.index);
    const start = mine.reduce((m, s) => Math.min(m, s.at[0] ?? Infinity), Infinity);
    drawChart(canvas, mine.map((s) => ({ label: `GPU ${s.index} %`, steps: s.at.map((at) => Math.round(at - start)),
      values: s.utilization_percent.map((v) => (v == null ? NaN : v)) })));
    canvas.dataset.points = mine.reduce((t, s) => t + s.at.length, 0);
  }
}

// Each node's job containers over the last hour: their CPU (% of one CPU) summed per usage round.
function drawNodeUsage(history) {
  const by = {};
  for (const x of history) (by[x.node] ||= []).push(x);
  for (const canvas of document.querySelectorAll("canvas[data-node-usage]")) {
    const samples = by[canvas.dataset.nodeUsage] || [];
    const start = samples.length ? samples[0].at : 0;
    const steps = samples.map((x) => Math.round(x.at - start));
    drawChart(canvas, [{ label: "CPU %", steps, values: samples.map((x) => x.cpu_percent) }]);
    canvas.dataset.points = samples.length;
  }
}

async function projectsPage() {
  every(2000, async () => {
    const o = await api("/overview");
    const quota = (q, fmt = (v) => v) => (q == null ? "—" : fmt(q));
    app.innerHTML = `<h1>Projects</h1><table><tr><th>project</th><th>running CPUs / quota</th><th>memory / quota</th>
      <th>GPUs / quota</th><th>borrowed (above quota)</th><th>attained service</th><th>queued</th></tr>
      ${o.projects.map((p) => {
        const borrowed = [["CPUs", p.used_cpus, p.quota_cpus], ["GPUs", p.used_gpus, p.quota_gpus]]
          .filter(([, u, q]) => q != null && u > q).map(([k, u, q]) => `${(u - q).toFixed(1)} ${k}`).join(", ");
        return `<tr><td>${esc(p.name)}</td><td>${p.used_cpus} / ${quota(p.quota_cpus)}</td><td>${gib(p.used_memory)} / ${quota(p.quota_memory, gib)}</td>
          <td>${p.used_gpus} / ${quota(p.quota_gpus)}</td><td>${borrowed || "—"}</td><td>${(p.attained_service / 3600).toFixed(2)} h</td><td>${p.queued}</td></tr>`;
      }).join("")}</table>`;
  });
}

async function modelsPage() {
  const models = await api("/models");
  app.innerHTML = `<h1>Models</h1><table><tr><th>model</th><th>project</th><th>latest</th><th>aliases</th></tr>
    ${models.map((m) => `<tr><td><a href="#/models/${esc(m.name)}">${esc(m.name)}</a></td><td>${esc(m.project)}</td><td>${m.latest_version ?? "—"}</td>
      <td>${Object.entries(m.aliases).map(([a, v]) => `${esc(a)} → ${v}`).join(", ")}</td></tr>`).join("")}</table>`;
}

async function modelPage(name) {
  const m = await api(`/models/${encodeURIComponent(name)}`);
  const histories = await Promise.all(Object.keys(m.aliases).map(async (a) => [a, await api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(a)}/history`)]));
  app.innerHTML = `<h1>Model ${esc(m.name)} <span class="muted">${esc(m.project)}</span></h1>
    <h2>Aliases</h2><table id="aliases"><tr><th>alias</th><th>version</th><th>history (newest first)</th><th></th></tr>
    ${histories.map(([a, events]) => `<tr data-alias="${esc(a)}"><td>${esc(a)}</td><td class="alias-version">${m.aliases[a]}</td>
      <td>${events.slice().reverse().map((e) => `${esc(e.action)} ${e.from_version ?? "—"} → ${e.to_version ?? "—"} by ${esc(e.by)} ${when(e.at)}`).join("<br>")}</td>
      <td><button data-rollback="${esc(a)}">Roll back</button></td></tr>`).join("")}</table>
    <form class="filters" id="move"><input name="alias" placeholder="alias" value="production"><input name="version" placeholder="version"><button>Move alias</button></form>
    <div id="model-error" class="error"></div>
    <h2>Versions</h2><table><tr><th>version</th><th>job</th><th>metrics</th><th>lineage (job → image → code → data)</th><th>formats</th><th>aliases</th></tr>
    ${m.versions.slice().reverse().map((v) => `<tr><td>${v.version}</td><td>${v.job ? `<a href="#/jobs/${esc(v.job)}">${esc(v.job)}</a>` : "—"}</td>
      <td>${Object.entries(v.metrics).map(([k, x]) => `${esc(k)}=${esc(typeof x === "number" ? x.toFixed(4) : x)}`).join("<br>")}</td>
      <td>${esc(v.lineage.image || "")}<br><span class="muted">${esc((v.lineage.code_sha256 || "").slice(0, 12))}</span>
        ${(v.lineage.data || []).map((d) => `<br>${esc(d.source || d.target || JSON.stringify(d))}`).join("")}</td>
      <td>${Object.keys(v.formats).map(esc).join(", ")}</td><td>${v.aliases.map(esc).join(", ")}</td></tr>`).join("")}</table>`;
  const fail = (err) => { document.getElementById("model-error").textContent = err.message; };
  app.querySelectorAll("button[data-rollback]").forEach((b) => {
    b.onclick = () => api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(b.dataset.rollback)}/rollback`, { method: "POST" }).then(() => modelPage(name), fail);
  });
  document.getElementById("move").onsubmit = (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(form.get("alias"))}`,
      { method: "PUT", body: JSON.stringify({ version: Number(form.get("version")) }) }).then(() => modelPage(name), fail);
  };
  app.dataset.ready = "model";
}

function traffic(split) {
  const colors = ["#2563eb", "#16a34a", "#d97706", "#7c3aed"];
  const parts = Object.entries(split || {}).filter(([, share]) => share > 0);
  if (!parts.length) return '<span class="muted">none</span>';
  return `<div class="split" data-traffic="${esc(JSON.stringify(split))}">${parts.map(([rev, share], i) =>
    `<span style="width:${share}%;background:${colors[i % colors.length]}">r${esc(rev)} ${Math.round(share)}%</span>`).join("")}</div>`;
}

async function servicesPage() {
  every(2000, async () => {
    const services = await api("/services");
    app.innerHTML = `<h1>Services</h1><table><tr><th>service</th><th>project</th><th>model</th><th>status</th><th>ready</th><th>traffic</th><th>endpoint</th></tr>
      ${services.map((s) => `<tr><td><a href="#/services/${esc(s.name)}">${esc(s.name)}</a></td><td>${esc(s.project)}</td><td>${esc(s.model)}</td>
        <td>${status(s.status)}</td><td>${s.ready_replicas} / ${s.desired_replicas}</td><td>${traffic(s.traffic)}</td><td>${esc(s.endpoint)}</td></tr>`).join("")}</table>`;
  });
}

// A service's traffic charts: one line for the whole service and one per revision that had requests.
function drawServiceCharts(samples) {
  const lines = (field, scale = 1) => {
    const by = {};
    for (const x of samples) {
      const key = x.revision == null ? "all" : `r${x.revision}`;
      (by[key] ||= { label: key, steps: [], values: [] });
      by[key].steps.push(Math.round(x.at - samples[0].at)); by[key].values.push(field(x) * scale);
    }
    return Object.values(by);
  };
  for (const [metric, field] of [["rps", (x) => x.rps], ["p99", (x) => x.p99_ms], ["errors", (x) => (x.requests ? (100 * x.errors) / x.requests : 0)]]) {
    const canvas = document.querySelector(`canvas[data-metric=${metric}]`);
    if (!canvas) continue;
    drawChart(canvas, lines(field));
    canvas.dataset.points = samples.length;
  }
}

async function servicePage(name) {
  every(2000, async () => {
    const [s, samples] = await Promise.all([api(`/services/${encodeURIComponent(name)}`),
      api(`/services/${encodeURIComponent(name)}/samples`)]);
    app.innerHTML = `<h1>Service ${esc(s.name)} ${status(s.status)}</h1><p class="muted">${esc(s.status_reason)}</p>
      <p>Endpoint <code>${esc(s.endpoint)}/v2/models/…/infer</code></p>
      <h2>Traffic split</h2><div id="traffic">${traffic(s.traffic)}</div>
      <p><button class="danger" id="rollback">Roll back</button> <span id="service-error" class="error"></span></p>
      <h2>Traffic at the gateway (every 5 s; x: seconds)</h2>
      <h3>Requests per second</h3><canvas class="chart" data-metric="rps"></canvas>
      <h3>p99 latency (ms)</h3><canvas class="chart" data-metric="p99"></canvas>
      <h3>Errors (% of requests)</h3><canvas class="chart" data-metric="errors"></canvas>
      <h2>Revisions</h2><table><tr><th>revision</th><th>model</th><th>runtime</th><th>status</th><th>reason</th></tr>
      ${s.revisions.slice().reverse().map((r) => `<tr><td>${r.number}</td><td>${esc(r.model)}:${r.version}</td><td>${esc(r.runtime)}</td><td>${status(r.status)}</td><td>${esc(r.reason)}</td></tr>`).join("")}</table>
      <h2>Replicas</h2><table><tr><th>job</th><th>revision</th><th>status</th><th>node</th><th>ready</th><th>weight</th><th>restarts</th></tr>
      ${s.replicas.map((r) => `<tr><td><a href="#/jobs/${esc(r.job)}">${esc(r.job)}</a></td><td>${r.revision}</td><td>${status(r.status)}${r.pending ? ` ${esc(r.pending)}` : ""}</td>
        <td>${esc(r.node || "")}</td><td>${r.ready ? "yes" : "no"}</td><td>${r.weight}</td><td>${r.restarts}</td></tr>`).join("")}</table>
      <h2>Events</h2><table>${s.events.slice().reverse().map((e) => `<tr><td>${when(e.at)}</td><td>${esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("")}</table>`;
    drawServiceCharts(samples);
    document.getElementById("rollback").onclick = () => api(`/services/${encodeURIComponent(name)}/rollback`, { method: "POST" })
      .catch((err) => { document.getElementById("service-error").textContent = err.message; });
    app.dataset.ready = "service";
  });
}

// -- routing ----------------------------------------------------------------------------------------
const routes = [
  [/^#\/login$/, loginPage], [/^#\/overview$/, overviewPage], [/^#\/jobs$/, jobsPage], [/^#\/jobs\/([^/]+)$/, jobPage],
  [/^#\/nodes$/, nodesPage], [/^#\/projects$/, projectsPage], [/^#\/models$/, modelsPage], [/^#\/models\/([^/]+)$/, modelPage],
  [/^#\/services$/, servicesPage], [/^#\/services\/([^/]+)$/, servicePage],
];

async function route() {
  for (const stop of cleanup) stop();
  cleanup = [];
  delete app.dataset.ready;
  const [path, search] = (location.hash || "#/overview").split("?");
  if (!token && path !== "#/login") { location.hash = "#/login"; return; }
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", path.startsWith(a.getAttribute("href"))));
  for (const [pattern, page] of routes) {
    const match = pattern.exec(path);
    if (match) {
      try {
        await page(match[1] ? decodeURIComponent(match[1]) : new URLSearchParams(search || ""));
      } catch (err) {
        app.innerHTML = `<div class="error">${esc(err.message)}</div>`;
      }
      return;
    }
  }
  location.hash = "#/overview";
}

window.addEventListener("hashchange", route);
if (token) api("/me").then((me) => { document.getElementById("who").textContent = me.name; }, () => {});
route();
