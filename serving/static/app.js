// The score lookup page: plain DOM, no libraries, no network beyond this server's API.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function token() {
  const t = $("token").value.trim();
  sessionStorage.setItem("facesurv-token", t);
  return t;
}

function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = false;
}

async function api(method, path, body) {
  $("error").hidden = true;
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : res.statusText;
    throw new Error(`${res.status}: ${msg}`);
  }
  return data;
}

function el(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

// Survival curve: S(0) = 1, then straight segments through the model's horizons.
function drawCurve(survival) {
  const svg = $("curve");
  svg.replaceChildren();
  const W = 480, H = 260, L = 48, R = 16, T = 14, B = 36;
  const maxDays = Math.max(...survival.map((s) => s.days)) * 1.05;
  const x = (d) => L + (d / maxDays) * (W - L - R);
  const y = (p) => T + (1 - p) * (H - T - B);
  svg.appendChild(el("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#8892a0" }));
  svg.appendChild(el("line", { x1: L, y1: y(0), x2: L, y2: y(1), stroke: "#8892a0" }));
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(el("line", { x1: L - 4, y1: y(p), x2: W - R, y2: y(p), stroke: "#e3e6ea" }));
    svg.appendChild(el("text", { x: L - 8, y: y(p) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6575" }, p.toFixed(2)));
  }
  for (const s of survival) {
    svg.appendChild(el("text", { x: x(s.days), y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#5b6575" }, String(s.days)));
  }
  svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11, fill: "#5b6575" }, "days since admission"));
  const pts = [{ days: 0, probability: 1 }, ...survival].map((s) => `${x(s.days).toFixed(1)},${y(s.probability).toFixed(1)}`);
  svg.appendChild(el("polyline", { id: "curve-line", points: pts.join(" "), fill: "none", stroke: "#1f6feb", "stroke-width": 2.5 }));
  for (const s of survival) {
    svg.appendChild(el("circle", { class: "curve-point", cx: x(s.days), cy: y(s.probability), r: 4, fill: "#1f6feb",
      "data-days": s.days, "data-probability": s.probability }));
  }
}

function flatten(prefix, value, rows) {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const k of Object.keys(value).sort()) flatten(prefix ? `${prefix}.${k}` : k, value[k], rows);
  } else {
    rows.push([prefix, typeof value === "string" ? value : JSON.stringify(value)]);
  }
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
  return tr;
}

function render(doc) {
  const s = doc.score;
  $("r-score-id").textContent = s.score_id;
  $("r-patient").textContent = s.patient_id;
  $("r-risk").textContent = s.risk_score.toFixed(4);
  $("r-percentile").textContent = s.risk_percentile.toFixed(1);
  $("r-model").textContent = `${s.model.name} v${s.model.version} (@${s.model.alias}, run ${s.model.run_id})`;
  $("r-time").textContent = s.created_at;
  $("r-ledger").textContent = `seq ${doc.ledger.seq}, hash ${doc.ledger.hash.slice(0, 16)}…`;
  const body = $("r-survival").tBodies[0];
  body.replaceChildren(...s.survival.map((p) => row([String(p.days), p.probability.toFixed(3)])));
  drawCurve(s.survival);
  const rows = [];
  flatten("", doc.lineage, rows);
  $("lineage").tBodies[0].replaceChildren(...rows.map(row));
  $("result").hidden = false;
  history.replaceState(null, "", `#score=${s.score_id}`);
}

async function lookup(scoreId) {
  render(await api("GET", `/v1/scores/${encodeURIComponent(scoreId)}`));
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("facesurv-token") || "";
  $("lookup-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await lookup($("score-id").value.trim()); } catch (e) { showError(e.message); }
  });
  $("score-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const score = await api("POST", "/v1/scores", { patient_id: $("patient-id").value.trim() });
      $("score-id").value = score.score_id;
      await lookup(score.score_id);
    } catch (e) { showError(e.message); }
  });
  const m = location.hash.match(/score=([0-9a-f]{32})/);
  if (m && $("token").value) { $("score-id").value = m[1]; lookup(m[1]).catch((e) => showError(e.message)); }
});
