"use strict";
// The technician's page: polls the daemon's read-only JSON API and fills the tables and the chart. No libraries.

function text(id, value, cls) {
  const el = document.getElementById(id);
  el.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  el.className = cls || el.className.replace(/\b(ok|bad)\b/g, "").trim();
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (cls) td.className = cls;
  row.appendChild(td);
}

async function getJson(path) {
  // location.origin, not a relative URL: a page opened as http://user:pass@host/ may not fetch URLs with credentials.
  const response = await fetch(location.origin + path, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
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
}

function showTransactions(list) {
  const body = document.querySelector("#transactions tbody");
  body.replaceChildren();
  for (const tx of list) {
    const row = document.createElement("tr");
    row.dataset.ref = tx.ref;
    cell(row, tx.ref.slice(0, 8));
    cell(row, tx.csms_transaction_id);
    cell(row, tx.stopped_at ? tx.stopped_at.replace("T", " ").slice(0, 19) : "running");
    const energy = tx.meter_stop_wh !== null && tx.meter_start_wh !== null ? tx.meter_stop_wh - tx.meter_start_wh : null;
    cell(row, energy === null ? null : energy + " Wh");
    if (!tx.records.length) cell(row, tx.state === "ended" ? "MISSING" : "not yet", tx.state === "ended" ? "bad" : "");
    else cell(row, tx.verified ? "verified" : "DOES NOT VERIFY", tx.verified ? "ok" : "bad");
    cell(row, tx.delivered_at ? "delivered" : "queued", tx.delivered_at ? "ok" : "");
    body.appendChild(row);
  }
}

function line(points, value, max, t0, span) {
  return points
    .map((p) => {
      const x = span > 0 ? ((p.t - t0) / span) * 590 + 5 : 5;
      const y = 195 - (max > 0 ? (value(p) / max) * 185 : 0);
      return x.toFixed(1) + "," + y.toFixed(1);
    })
    .join(" ");
}

function showLive(live) {
  const points = live.points;
  const power = document.getElementById("power-line");
  const energy = document.getElementById("energy-line");
  if (!live.transaction || points.length === 0) {
    text("live-caption", "no transaction running", "muted");
    power.setAttribute("points", "");
    energy.setAttribute("points", "");
    return;
  }
  const last = points[points.length - 1];
  text("live-caption", "transaction " + live.transaction.slice(0, 8) + ": " + (last.power_w / 1000).toFixed(1) +
    " kW, " + last.energy_wh.toFixed(0) + " Wh so far", "");
  const t0 = points[0].t;
  const span = last.t - t0;
  power.setAttribute("points", line(points, (p) => p.power_w, Math.max(...points.map((p) => p.power_w)), t0, span));
  energy.setAttribute("points", line(points, (p) => p.energy_wh, Math.max(...points.map((p) => p.energy_wh)), t0, span));
}

async function refresh() {
  try {
    const [status, live, transactions] = await Promise.all([
      getJson("/api/status"), getJson("/api/live"), getJson("/api/transactions?last=20"),
    ]);
    showStatus(status);
    showLive(live);
    showTransactions(transactions);
    text("updated", "updated " + new Date().toLocaleTimeString(), "muted");
  } catch (error) {
    text("updated", "cannot reach the daemon: " + error.message, "bad");
  }
}

refresh();
setInterval(refresh, 2000);
