"use strict";
// What every view of the page shares. Everything from the server is put
// in the page as text (textContent), never as HTML: a payload, key, header
// or error cannot run as script.
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};
const row = (cells, head) => {
  const tr = el("tr");
  for (const c of cells) {
    const td = el(head ? "th" : "td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
    if (typeof c === "number") td.className = "n";
    tr.appendChild(td);
  }
  return tr;
};
const table = (head, rows) => {
  const t = el("table");
  t.appendChild(row(head, true));
  for (const r of rows) t.appendChild(row(r));
  return t;
};
// A link to a view of the page (its address is the hash: views can be
// bookmarked, and the browser's back button works).
const link = (text, ...route) => {
  const a = el("a", text);
  a.href = "#/" + route.map(encodeURIComponent).join("/");
  return a;
};
const enc = encodeURIComponent;

// What the server said of itself and of this browser's session.
const session = { canChange: false, csrf: null, signedIn: false, tokenRequired: false, readOnly: false };

class ApiError extends Error {
  constructor(status, kind, message) { super(message); this.status = status; this.kind = kind; }
}
const api = async (path, body, method) => {
  const init = { headers: { "Accept": "application/json" } };
  if (body !== undefined || method) {
    init.method = method || "POST";
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (session.csrf) init.headers["X-Millrace-CSRF"] = session.csrf;
  }
  const r = await fetch("api/v1" + path, init);
  const answer = await r.json();
  if (!r.ok) throw new ApiError(r.status, answer.error, answer.message || r.statusText);
  return answer;
};
const say = (text) => { document.getElementById("notice").textContent = text; };
const button = (label, action) => {
  const b = el("button", label);
  b.addEventListener("click", async () => {
    try { await action(); } catch (e) { say(`failed: ${e.message}`); }
  });
  return b;
};
const input = (id, value, title) => {
  const i = el("input");
  i.id = id;
  i.value = value || "";
  if (title) { i.title = title; i.placeholder = title; }
  return i;
};
const labelled = (text, control) => {
  const l = el("label", text + " ");
  l.appendChild(control);
  return l;
};
const when = (ms) => ms ? new Date(ms).toISOString() : "";

// A line chart in SVG, drawn here (no library, nothing from a CDN):
// `series` is [{name, points: [[ms, value], ...]}]; the x axis is time.
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207"];
function chart(title, series, unit) {
  const w = 560, h = 150, left = 48, bottom = 20, top = 8;
  const box = el("figure", null, "chart");
  box.appendChild(el("figcaption", title));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) {
    box.appendChild(el("div", "not enough samples yet: the server samples every few seconds", "muted"));
    return box;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1]));
  const x = (t) => left + (w - left - 4) * (t1 === t0 ? 1 : (t - t0) / (t1 - t0));
  const y = (v) => top + (h - top - bottom) * (1 - v / vmax);
  const line = (x1, y1, x2, y2, color) => {
    const l = document.createElementNS(SVG, "line");
    for (const [k, v] of [["x1", x1], ["y1", y1], ["x2", x2], ["y2", y2]]) l.setAttribute(k, v);
    l.setAttribute("stroke", color);
    svg.appendChild(l);
  };
  const label = (text, lx, ly, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", lx);
    t.setAttribute("y", ly);
    t.setAttribute("font-size", "10");
    t.setAttribute("fill", "#56606b");
    t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.appendChild(t);
  };
  line(left, y(0), w - 4, y(0), "#c9d1da");
  line(left, y(vmax), w - 4, y(vmax), "#eef1f4");
  label(`${Math.round(vmax * 10) / 10} ${unit}`, left - 4, y(vmax) + 4, "end");
  label(`0`, left - 4, y(0) + 4, "end");
  label(new Date(t0).toLocaleTimeString(), left, h - 4, "start");
  label(new Date(t1).toLocaleTimeString(), w - 4, h - 4, "end");
  series.forEach((s, i) => {
    const p = document.createElementNS(SVG, "polyline");
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", COLORS[i % COLORS.length]);
    p.setAttribute("stroke-width", "1.5");
    p.setAttribute("points", s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    svg.appendChild(p);
  });
  box.appendChild(svg);
  const legend = el("div", null, "legend");
  series.forEach((s, i) => {
    const k = el("span", `■ ${s.name}`);
    k.style.color = COLORS[i % COLORS.length];
    legend.appendChild(k);
  });
  box.appendChild(legend);
  return box;
}
