"use strict";
// Everything from the server is put in the page as text (textContent),
// never as HTML: a payload, key, header or error cannot run as script.
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
const api = async (path) => {
  const r = await fetch("api/v1" + path, { headers: { "Accept": "application/json" } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.message || r.statusText);
  return body;
};

async function overview() {
  const { topics } = await api("/topics");
  const root = document.getElementById("overview");
  const fresh = el("div");
  fresh.appendChild(el("h2", "Topics"));
  const t = el("table");
  t.appendChild(row(["topic", "partitions", "messages", "delayed", "dead letters", "groups"], true));
  for (const topic of topics) {
    const link = el("a", topic.name);
    link.addEventListener("click", () => showTopic(topic.name));
    const groups = el("div");
    for (const g of topic.groups) {
      const line = el("div", `${g.group}: lag ${g.lag}, pending ${g.pending}, ${g.members} member(s)`);
      if (g.paused) line.appendChild(el("span", " paused", "paused"));
      groups.appendChild(line);
    }
    t.appendChild(row([link, topic.partitions, topic.length, topic.delayed, topic.dlq_length, groups]));
  }
  fresh.appendChild(t);
  root.replaceChildren(fresh);
  document.getElementById("status").textContent =
    `${topics.length} topic(s), refreshed ${new Date().toLocaleTimeString()}`;
}

async function showTopic(name) {
  const { messages } = await api(`/topics/${encodeURIComponent(name)}/messages?limit=50`);
  const root = document.getElementById("detail");
  const box = el("div");
  box.appendChild(el("h2", `Messages of ${name} (first ${messages.length})`));
  const t = el("table");
  t.appendChild(row(["id", "published", "key", "payload"], true));
  for (const m of messages) {
    const link = el("a", m.message_id);
    link.addEventListener("click", () => showMessage(name, m.message_id));
    const payload = m.data !== undefined ? JSON.stringify(m.data) : `raw: ${m.raw_base64}`;
    t.appendChild(row([link, m.published_at, m.key, payload]));
  }
  box.appendChild(t);
  root.replaceChildren(box);
}

async function showMessage(topic, id) {
  const m = await api(`/topics/${encodeURIComponent(topic)}/messages/${encodeURIComponent(id)}`);
  const root = document.getElementById("detail");
  const box = el("div");
  box.appendChild(el("h2", `Message ${id}`));
  box.appendChild(el("pre", JSON.stringify(m, null, 2)));
  root.replaceChildren(box);
}

async function tick() {
  try {
    await overview();
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = `cannot refresh: ${e.message}`;
  }
}
tick();
setInterval(tick, 3000);
