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

async function refresh() {
  try {
    const [status, live, transactions] = await Promise.all([
      get("/api/status"), get("/api/live"), get("/api/transactions?last=20"),
    ]);
    showStatus(await status.json());
    showLive(await live.json());
    showTransactions(await transactions.json());
    await showChart();
    text("updated", "updated " + new Date().toLocaleTimeString(), "muted");
  } catch (error) {
    text("updated", "cannot reach the daemon: " + error.message, "bad");
  }
}

refresh();
setInterval(refresh, 2000);
