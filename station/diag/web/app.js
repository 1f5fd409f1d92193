"use strict";
// The technician's page. The server sends it filled in (status, tables, chart); this script only refreshes it every
// 2 s from the daemon's read-only JSON API and redraws the chart (an SVG the server renders at this box's size).
// No libraries, nothing from elsewhere.

function text(id, value, cls) {
  const el = document.getElementById(id);
  el.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  el.className = cls || "";
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
}

async function get(path) {
  // location.origin, not a relative URL: a page opened as http://user:pass@host/ may not fetch URLs with credentials.
  const response = await fetch(location.origin + path, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response;
}

function showStatus(s) {
  text("station-id", s.station_id);
  const o = s.ocpp;
  text("csms-state", o.connected ? "connected (OCPP " + o.version + ")" : "NOT connected", o.connected ? "ok" : "bad");
  text("csms-url", o.url);
  text("csms-queue", o.queue_depth);
  text("csms-error", o.last_error || "none");
  const m = s.meter;
  text("meter-link", m.link, m.link === "up" ? "ok" : "bad");
  text("meter-model", m.model);
  text("meter-identity", (m.serial || "?") + " / " + (m.firmware || "?"));
  text("meter-key", m.public_key, "key");
  text("meter-error", m.last_error || "none");
  const body = document.querySelector("#connectors tbody");
  body.replaceChildren();
  for (const c of s.connectors) {
    const row = document.createElement("tr");
    cell(row, c.id);
    cell(row, c.state, c.state === "Faulted" ? "bad" : "");
    cell(row, c.transaction ? c.transaction.ref + " (" + c.transaction.id_tag + ")" : "none");
    body.appendChild(row);
  }
  // The same cells as meter_row() in webpage.py.
  const meters = document.querySelector("#meters tbody");
  meters.replaceChildren();
  for (const m of s.meters || []) {
    const row = document.createElement("tr");
    cell(row, m.evse_id);
    cell(row, m.model);
    cell(row, m.bus + " / " + m.device_id);
    cell(row, m.link, m.link === "up" ? "ok" : "bad");
    cell(row, m.serial || "?");
    cell(row, m.last_error || "none");
    meters.appendChild(row);
  }
  // The same cells as ev_row() in webpage.py.
  const ev = document.querySelector("#ev tbody");
  ev.replaceChildren();
  for (const e of s.ev || []) {
    const row = document.createElement("tr");
    const faults = Object.keys(e.faults);
    cell(row, e.evse_id);
    cell(row, e.online ? e.pilot : "controller silent", e.online ? "" : "bad");
    cell(row, e.relay);
    cell(row, e.lock);
    cell(row, e.current_limit_a + " A");
    cell(row, faults.length ? faults.join(", ") : "none", faults.length ? "bad" : "");
    ev.appendChild(row);
  }
}

// The same cells as transaction_row() in webpage.py.
function showTransactions(list) {
  const body = document.querySelector("#transactions tbody");
  body.replaceChildren();
  for (const tx of list) {
    const running = tx.state !== "ended";
    const row = document.createElement("tr");
    row.dataset.ref = tx.ref;
    cell(row, tx.ref.slice(0, 8));
    cell(row, tx.csms_transaction_id);
    cell(row, running || !tx.stopped_at ? "running" : tx.stopped_at.replace("T", " ").slice(0, 19));
    const energy = tx.meter_stop_wh !== null && tx.meter_start_wh !== null ? tx.meter_stop_wh - tx.meter_start_wh : null;
    cell(row, energy === null ? null : energy + " Wh");
    if (!tx.records.length) cell(row, running ? "not signed yet" : "MISSING", running ? "" : "bad");
    else cell(row, tx.verified ? "verified" : "DOES NOT VERIFY", tx.verified ? "ok" : "bad");
    if (running) cell(row, "running");
    else cell(row, tx.delivered_at ? "delivered" : "queued", tx.delivered_at ? "ok" : "");
    body.appendChild(row);
  }
}

function showLive(live) {
  const points = live.points;
  if (!live.transaction) {
    text("live-caption", "no transaction running", "muted");
  } else if (!points.length) {
    text("live-caption", "transaction " + live.transaction.slice(0, 8) + ": waiting for the first reading", "muted");
  } else {
    const last = points[points.length - 1];
    text("live-caption", "transaction " + live.transaction.slice(0, 8) + ": " + (last.power_w / 1000).toFixed(1) +
      " kW, " + last.energy_wh.toFixed(0) + " Wh so far", "");
  }
}

async function showChart() {
  const box = document.getElementById("chart-box");
  const width = Math.max(240, Math.round(box.clientWidth));
  const height = Math.max(160, Math.round(width * 0.42));
  const svg = await (await get("/chart.svg?w=" + width + "&h=" + height)).text();
  const chart = new DOMParser().parseFromString(svg, "image/svg+xml").documentElement;
  if (chart.nodeName === "svg") box.replaceChildren(document.importNode(chart, true));
}

// Issue 19 part 5: each EVSE's composite schedule of the next 24 h as a step chart, drawn here as inline SVG from
// /api/schedule (asked for every 30 s; the "now" line moves at every refresh).
const SVG = "http://www.w3.org/2000/svg";
const MAX_PERIODS = 1000; // the server reports at most 1000 per EVSE; never draw more
let schedule = null;
let scheduleAt = 0;

function svg(parent, name, attrs, content) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  if (content !== undefined) el.textContent = content;
  parent.appendChild(el);
  return el;
}

function hhmm(ms) {
  const d = new Date(ms);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

function scheduleChart(id, s, hardware, width) {
  const height = 210, left = 44, right = 12, top = 34, bottom = 28;
  const start = Date.parse(s.start), span = (s.duration || 86400) * 1000, end = start + span;
  const periods = s.periods.slice(0, MAX_PERIODS);
  const peak = periods.reduce((m, p) => Math.max(m, p.limit), hardware || 0) || 1;
  const step = [1, 2, 4, 5, 8, 10, 16, 20, 25, 50, 100, 200, 500, 1000].find((n) => peak / n <= 5) || peak / 4;
  const yMax = step * Math.ceil(peak / step);
  const x = (t) => left + (t - start) / span * (width - left - right);
  const y = (a) => top + (1 - a / yMax) * (height - top - bottom);
  const root = document.createElementNS(SVG, "svg");
  for (const [k, v] of Object.entries({ id, class: "schedule-chart", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": "charging limit (A) over the next 24 h" })) root.setAttribute(k, String(v));
  svg(root, "text", { class: "unit", x: 4, y: 13 }, "limit (A per phase)");
  for (let a = 0; a <= yMax + step / 1000; a += step) {
    svg(root, "line", { class: "grid", x1: left, x2: width - right, y1: y(a), y2: y(a) });
    svg(root, "text", { class: "tick amps", x: left - 6, y: y(a) + 4, "text-anchor": "end" }, String(a));
  }
  const hours = width < 480 ? 6 : 3;
  const tick = new Date(start);
  tick.setMinutes(0, 0, 0);
  do tick.setHours(tick.getHours() + 1); while (tick.getHours() % hours);
  for (let t = tick.getTime(); t <= end; t += hours * 3600000) {
    svg(root, "line", { class: "grid", x1: x(t), x2: x(t), y1: top, y2: height - bottom });
    svg(root, "text", { class: "tick time", x: x(t), y: height - bottom + 16, "text-anchor": "middle" }, hhmm(t));
  }
  svg(root, "line", { class: "axis", x1: left, x2: left, y1: top, y2: height - bottom });
  svg(root, "line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom });
  if (periods.length) {
    let d = `M${x(start).toFixed(1)},${y(periods[0].limit).toFixed(1)}`;
    for (const p of periods.slice(1)) d += `H${x(start + p.start * 1000).toFixed(1)}V${y(p.limit).toFixed(1)}`;
    svg(root, "path", { class: "step", d: d + `H${x(end).toFixed(1)}` });
  }
  const now = x(Math.min(end, Math.max(start, Date.now())));
  svg(root, "line", { class: "now", x1: now, x2: now, y1: top - 4, y2: height - bottom });
  svg(root, "text", { class: "now", x: now + 3, y: top - 5 }, "now");
  return root;
}

function showSchedule(report) {
  const box = document.getElementById("schedule");
  const width = Math.max(320, Math.round(box.clientWidth || 720));
  const blocks = report.evses.map((e) => ({ title: "EVSE " + e.evse_id, e, drawn: e.controllable }));
  if (report.station && report.station.profiles.length) {
    blocks.push({ title: "station (all EVSEs)", e: report.station, drawn: true });
  }
  box.replaceChildren();
  for (const { title, e, drawn } of blocks) {
    const div = document.createElement("div");
    div.className = "schedule";
    div.dataset.evse = e.evse_id;
    const h = document.createElement("h3");
    h.textContent = title;
    const p = document.createElement("p");
    p.textContent = e.summary;
    if (!drawn) p.className = "muted";
    div.append(h, p);
    if (drawn) div.appendChild(scheduleChart("schedule-" + e.evse_id, e.schedule, e.max_current_a, width));
    box.appendChild(div);
  }
}

async function refreshSchedule() {
  if (!schedule || Date.now() - scheduleAt > 30000) {
    schedule = await (await get("/api/schedule")).json();
    scheduleAt = Date.now();
  }
  showSchedule(schedule);
}

async function refresh() {
  try {
    const [status, live, transactions] = await Promise.all([
      get("/api/status"), get("/api/live"), get("/api/transactions?last=20"),
    ]);
    showStatus(await status.json());
    showLive(await live.json());
    showTransactions(await transactions.json());
    await showChart();
    await refreshSchedule();
    text("updated", "updated " + new Date().toLocaleTimeString(), "muted");
  } catch (error) {
    text("updated", "cannot reach the daemon: " + error.message, "bad");
  }
}

refresh();
setInterval(refresh, 2000);
