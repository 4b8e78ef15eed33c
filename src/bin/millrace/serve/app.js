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
const api = async (path, body) => {
  const init = { headers: { "Accept": "application/json" } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("api/v1" + path, init);
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.message || r.statusText);
  return answer;
};
// Changes are offered only where the server takes them without a token
// (a token-protected server's page is read-only for now).
let canChange = false;
const button = (label, action) => {
  const b = el("button", label);
  b.addEventListener("click", async () => {
    try { await action(); } catch (e) { say(`failed: ${e.message}`); }
  });
  return b;
};
const say = (text) => { document.getElementById("notice").textContent = text; };

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
      const line = el("div");
      const name = el("a", g.group);
      name.addEventListener("click", () => showGroup(topic.name, g.group));
      line.appendChild(name);
      line.appendChild(document.createTextNode(`: lag ${g.lag}, pending ${g.pending}, ${g.members} member(s)`));
      if (g.paused) line.appendChild(el("span", " paused", "paused"));
      groups.appendChild(line);
    }
    let dead = topic.dlq_length;
    if (dead > 0) {
      dead = el("a", String(topic.dlq_length));
      dead.addEventListener("click", () => showDeadLetters(topic.name));
    }
    t.appendChild(row([link, topic.partitions, topic.length, topic.delayed, dead, groups]));
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

async function showDeadLetters(topic) {
  const { dead_letters } = await api(`/topics/${encodeURIComponent(topic)}/dlq?limit=100`);
  const root = document.getElementById("detail");
  const box = el("div");
  box.appendChild(el("h2", `Dead letters of ${topic} (${dead_letters.length})`));
  const t = el("table");
  t.appendChild(row(["", "id", "group", "attempts", "error", "failed at"], true));
  const boxes = [];
  for (const d of dead_letters) {
    const pick = el("input");
    pick.type = "checkbox";
    pick.value = `${d.partition}:${d.id}`;
    boxes.push(pick);
    const failed = new Date(d.failed_at_ms).toISOString();
    t.appendChild(row([canChange ? pick : "", pick.value, d.group, d.attempts, d.error, failed]));
  }
  box.appendChild(t);
  if (canChange && dead_letters.length > 0) {
    const path = `/topics/${encodeURIComponent(topic)}/dlq`;
    const picked = () => boxes.filter((b) => b.checked).map((b) => b.value);
    const done = async (text) => { await showDeadLetters(topic); say(text); await tick(); };
    box.appendChild(button("Replay selected to their group", async () => {
      const ids = picked();
      if (ids.length === 0) { say("select dead letters first"); return; }
      const r = await api(`${path}/replay`, { ids });
      await done(`replayed ${r.replayed}`);
    }));
    box.appendChild(button("Replay all to their group", async () => {
      const r = await api(`${path}/replay`, { all: true });
      await done(`replayed ${r.replayed}`);
    }));
    box.appendChild(button("Purge all", async () => {
      if (!window.confirm(`Delete all ${dead_letters.length} dead letters of ${topic} for good?`)) return;
      const r = await api(`${path}/purge`, { all: true });
      await done(`purged ${r.purged}`);
    }));
  }
  root.replaceChildren(box);
}

async function showGroup(topic, group) {
  const path = `/topics/${encodeURIComponent(topic)}/groups/${encodeURIComponent(group)}`;
  const g = await api(path);
  const root = document.getElementById("detail");
  const box = el("div");
  box.appendChild(el("h2", `Group ${group} of ${topic}: lag ${g.lag}, pending ${g.pending}${g.paused ? ", paused" : ""}`));
  const members = el("table");
  members.appendChild(row(["member", "static", "last heartbeat"], true));
  for (const m of g.members) {
    members.appendChild(row([m.id, m.is_static ? "yes" : "no", new Date(m.last_heartbeat_ms).toISOString()]));
  }
  box.appendChild(members);
  const parts = el("table");
  parts.appendChild(row(["partition", "owner", "epoch", "lag", "pending"], true));
  for (const p of g.partitions) {
    parts.appendChild(row([p.partition, p.owner, p.epoch, p.lag, p.pending]));
  }
  box.appendChild(parts);
  if (canChange) {
    const again = async (text) => { await showGroup(topic, group); say(text); };
    box.appendChild(g.paused
      ? button("Resume", async () => { await api(`${path}/resume`, {}); await again("resumed"); })
      : button("Pause", async () => { await api(`${path}/pause`, {}); await again("paused"); }));
    const to = el("input");
    to.id = "reset-to";
    to.value = "earliest";
    to.title = "earliest, latest, an RFC 3339 time or a stream id";
    box.appendChild(el("span", "Reset to "));
    box.appendChild(to);
    const preview = el("div");
    preview.id = "reset-preview";
    box.appendChild(button("Preview reset", async () => {
      const plan = await api(`${path}/reset?to=${encodeURIComponent(to.value)}`);
      const shown = el("div");
      shown.appendChild(el("p", `A reset to ${plan.to} would leave lag ${plan.lag_after}; ` +
        `${plan.members.length} live member(s). Nothing changes until you confirm.`));
      shown.appendChild(el("pre", JSON.stringify(plan.partitions, null, 2)));
      shown.appendChild(button("Confirm reset", async () => {
        const done = await api(`${path}/reset`, { to: plan.to, force: false });
        await again(`reset to ${done.to}: lag ${done.lag_after}`);
      }));
      preview.replaceChildren(shown);
    }));
    box.appendChild(preview);
  }
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
api("/server").then((s) => { canChange = !s.read_only && !s.token_required; }).catch(() => {})
  .finally(() => { tick(); setInterval(tick, 3000); });
