// psd's dashboard: one user's series as a chart (/v3/series) and a leaderboard with then vs
// now (/v3/leaderboard), in the user's time zone. Form fields start from the page's query
// string, so a view can be linked to. window.psdSeries / window.psdBoard keep what was shown.
"use strict";

const params = new URLSearchParams(location.search);
for (const form of document.forms) {
  for (const field of form.elements) {
    if (field.name && params.has(field.name)) field.value = params.get(field.name);
  }
}

function instant(text) {
  return /^\d+$/.test(text) ? Number(text) : text;  // Unix seconds, or ISO wall time
}

// A uid goes up to 2^63 - 1, past what a Number holds exactly (2^53): it stays a BigInt on
// its way out, written as a JSON number, and comes back as text.
function uid(text) {
  if (!/^\d+$/.test(text.trim())) throw new Error(`a uid is digits, not ${JSON.stringify(text)}`);
  return BigInt(text.trim());
}

function json(body) {
  const marked = JSON.stringify(body, (k, v) => typeof v === "bigint" ? `\u0000${v}` : v);
  return marked.replace(/"uid":"\\u0000(\d+)"/g, '"uid":$1');
}

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: json(body),
  });
  const data = JSON.parse((await answer.text()).replace(/("uid":\s*)(\d+)/g, '$1"$2"'));
  if (!answer.ok) throw new Error(`${path}: ${data.error.field || ""} ${data.error.message}`);
  return data;
}

function range() {
  const f = document.forms["series-form"].elements;
  return {thing: f.thing.value, tz: f.tz.value, from: instant(f.from.value),
          to: instant(f.to.value), step: f.step.value, uid: uid(f.uid.value)};
}

let chart = null;

async function showSeries() {
  const r = range();
  const data = await post("/v3/series", {
    users: [{uid: r.uid, tz: r.tz}], things: [r.thing], from: r.from, to: r.to, step: r.step,
  });
  const buckets = data.results[0].buckets;
  const xs = buckets.map(b => b.from), ys = buckets.map(b => b.sums[r.thing]);
  window.psdSeries = {thing: r.thing, buckets};
  if (chart) chart.destroy();
  chart = new uPlot({
    width: 900, height: 300, title: `user ${r.uid}: ${r.thing} by ${r.step} (${r.tz})`,
    tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), r.tz),
    scales: {y: {range: (u, min, max) => [0, Math.max(1, max)]}},
    series: [{}, {label: r.thing, stroke: "#36c", fill: "rgba(51,102,204,.15)",
                  paths: uPlot.paths.bars({size: [0.8]})}],
  }, [xs, ys], document.getElementById("chart"));
}

async function showBoard() {
  const r = range();
  const f = document.forms["board-form"].elements;
  const users = f.users.value.split(",").map(u => ({uid: uid(u), tz: r.tz}));
  const body = {users, thing: r.thing, from: r.from, to: r.to};
  if (f.compare_at.value) body.compare_at = instant(f.compare_at.value);
  const data = await post("/v3/leaderboard", body);
  window.psdBoard = data.entries;
  const rows = data.entries.map(e => {
    const move = e.movement === null ? "" : e.movement > 0 ? `▲ ${e.movement}`
      : e.movement < 0 ? `▼ ${-e.movement}` : "=";
    const cls = e.movement > 0 ? "up" : e.movement < 0 ? "down" : "";
    const then = e.then ? `${e.then.value} (#${e.then.rank})` : "";
    return `<tr><td>${e.rank}</td><td>${e.uid}</td><td>${e.value}</td><td>${then}</td>` +
      `<td class="${cls}">${move}</td></tr>`;
  });
  document.querySelector("#board tbody").innerHTML = rows.join("");
}

function guarded(show) {
  return event => {
    if (event) event.preventDefault();
    document.getElementById("error").textContent = "";
    show().catch(error => { document.getElementById("error").textContent = error.message; });
  };
}

document.forms["series-form"].addEventListener("submit", guarded(showSeries));
document.forms["board-form"].addEventListener("submit", guarded(showBoard));
if (params.has("from") && params.has("to")) {
  guarded(showSeries)();
  guarded(showBoard)();
}
