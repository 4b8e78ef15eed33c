"use strict";
// The overview (every topic, live), a topic (partitions, charts, browsing
// and search) and a message (payload, headers, where it stands).

async function overview() {
  const { topics } = await api("/topics");
  const fresh = el("div");
  fresh.appendChild(el("h2", "Topics"));
  const t = el("table");
  t.appendChild(row(["topic", "partitions", "messages", "published/s", "delayed", "dead letters", "groups"], true));
  for (const topic of topics) {
    const groups = el("div");
    for (const g of topic.groups) {
      const line = el("div");
      line.appendChild(link(g.group, "group", topic.name, g.group));
      const rate = g.handled_per_s === undefined || g.handled_per_s === null ? "" : `, ${g.handled_per_s.toFixed(1)}/s`;
      line.appendChild(document.createTextNode(`: lag ${g.lag}, pending ${g.pending}, ${g.members} member(s)${rate}`));
      if (g.paused) line.appendChild(el("span", " paused", "paused"));
      groups.appendChild(line);
    }
    const dead = topic.dlq_length > 0 ? link(String(topic.dlq_length), "dlq", topic.name) : topic.dlq_length;
    const rate = topic.published_per_s === undefined || topic.published_per_s === null ? "" : topic.published_per_s.toFixed(1);
    t.appendChild(row([link(topic.name, "topic", topic.name), topic.partitions, topic.length, rate, topic.delayed, dead, groups]));
  }
  fresh.appendChild(t);
  document.getElementById("overview").replaceChildren(fresh);
  document.getElementById("status").textContent =
    `${topics.length} topic(s), refreshed ${new Date().toLocaleTimeString()}`;
}

// A topic: its partitions, its charts, and a page of its messages.
async function showTopic(name, query) {
  const path = `/topics/${enc(name)}`;
  const info = await api(path);
  const box = el("div");
  box.appendChild(el("h2", `Topic ${name}`));
  box.appendChild(el("p", `${info.partitions} partition(s), ${info.length} message(s), ` +
    `${info.delayed} delayed, ${info.dlq_length} dead letter(s)`));
  box.appendChild(table(["partition", "messages"], info.partition_lengths.map((n, p) => [p, n])));
  const charts = el("div", null, "charts");
  charts.id = "charts";
  box.appendChild(charts);
  box.appendChild(searchForm(name, query || {}));
  const results = el("div");
  results.id = "results";
  box.appendChild(results);
  document.getElementById("detail").replaceChildren(box);
  await Promise.all([drawCharts(name, charts), browse(name, query || {}, results)]);
}

// Publish and handle rates and lag over the last hour, as the server
// sampled them.
async function drawCharts(name, into) {
  const h = await api(`/topics/${enc(name)}/history`);
  const rates = [{ name: "published/s", points: h.published_per_s }]
    .concat(h.groups.map((g) => ({ name: `${g.group} handled/s`, points: g.handled_per_s })));
  const lags = h.groups.map((g) => ({ name: `${g.group} lag`, points: g.lag }));
  into.replaceChildren(
    chart(`Rates over the last hour (sampled every ${h.interval_s} s)`, rates, "/s"),
    chart("Lag per group", lags, "msgs"),
  );
}

function searchForm(name, q) {
  const form = el("form", null, "search");
  form.id = "search";
  const from = input("search-from", q.from || "earliest", "earliest, latest, a time or a stream id");
  const key = input("search-key", q.key, "partition key");
  const filter = input("search-filter", q.filter, "cents > 100 and customer.id = 42");
  filter.size = 36;
  const windowed = input("search-window", q.window || "10000", "messages examined");
  windowed.size = 7;
  form.append(labelled("From", from), labelled("Key", key), labelled("Payload filter", filter),
    labelled("Window", windowed));
  const go = el("button", "Search");
  go.type = "submit";
  form.appendChild(go);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const query = { from: from.value.trim(), key: key.value.trim(), filter: filter.value.trim(), window: windowed.value.trim() };
    // A message id (partition:lane:id) opens that message.
    if (/^\d+:\d+:\d+(-\d+)?$/.test(query.from)) { location.hash = `#/message/${enc(name)}/${enc(query.from)}`; return; }
    browse(name, query, document.getElementById("results")).catch((err) => say(`failed: ${err.message}`));
  });
  return form;
}

// One page of messages (or of matches), with a button for the next.
async function browse(name, q, into, after) {
  const params = new URLSearchParams({ limit: "50" });
  for (const k of ["from", "key", "filter", "window"]) if (q[k]) params.set(k, q[k]);
  if (after) params.set("after", after);
  const page = await api(`/topics/${enc(name)}/messages?${params}`);
  const box = el("div");
  const searching = q.key || q.filter;
  const what = searching
    ? `${page.messages.length} match(es) among ${page.scanned} message(s) examined (window ${page.window})`
    : `${page.messages.length} message(s)`;
  const summary = el("p", `${what}${page.next ? "; there is more" : "; to the end of the topic"}`);
  summary.id = "results-summary";
  box.appendChild(summary);
  const t = el("table");
  t.appendChild(row(["id", "published", "key", "payload"], true));
  for (const m of page.messages) {
    const payload = m.data !== undefined ? JSON.stringify(m.data) : `raw: ${m.raw_base64}`;
    t.appendChild(row([link(m.message_id, "message", name, m.message_id), m.published_at, m.key, payload]));
  }
  box.appendChild(t);
  if (page.next) box.appendChild(button(searching ? "Search further" : "Next page", () => browse(name, q, into, page.next)));
  into.replaceChildren(box);
}

async function showMessage(topic, id) {
  const m = await api(`/topics/${enc(topic)}/messages/${enc(id)}`);
  const box = el("div");
  box.appendChild(el("h2", `Message ${id} of ${topic}`));
  box.appendChild(el("p", `partition ${m.partition}, key ${m.key === null || m.key === undefined ? "none" : m.key}, ` +
    `published ${m.published_at || "?"}, ${m.stored}${m.due_at ? `, due ${m.due_at}` : ""}`));
  box.appendChild(el("h3", "Payload"));
  box.appendChild(el("pre", m.data !== undefined ? JSON.stringify(m.data, null, 2) : `raw (base64): ${m.raw_base64 || ""}`));
  box.appendChild(el("h3", "Headers"));
  box.appendChild(table(["header", "value"], Object.entries(m.headers || {})));
  box.appendChild(el("h3", "In each group"));
  box.appendChild(table(["group", "state", "attempt", "detail"], (m.groups || []).map((g) => [
    link(g.group, "group", topic, g.group), g.state, g.attempt,
    [g.member && `member ${g.member}`, g.since && `since ${g.since}`, g.due && `due ${g.due}`,
      g.error && `error: ${g.error}`, g.result !== undefined && `result: ${JSON.stringify(g.result)}`,
      g.done_at && `done ${g.done_at}`, g.progress !== undefined && `progress: ${JSON.stringify(g.progress)}`]
      .filter(Boolean).join("; "),
  ])));
  document.getElementById("detail").replaceChildren(box);
}
