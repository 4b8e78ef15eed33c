"use strict";
// Views that act: a group (pause, resume, reset with its preview), dead
// letters (detail, replay, purge) and schedules (add, remove). Buttons
// show only where the server takes changes from this browser.

async function showGroup(topic, group) {
  const path = `/topics/${enc(topic)}/groups/${enc(group)}`;
  const g = await api(path);
  const box = el("div");
  box.appendChild(el("h2", `Group ${group} of ${topic}: lag ${g.lag}, pending ${g.pending}${g.paused ? ", paused" : ""}`));
  box.appendChild(table(["member", "static", "joined", "last heartbeat"],
    g.members.map((m) => [m.id, m.is_static ? "yes" : "no", when(m.joined_ms), when(m.last_heartbeat_ms)])));
  box.appendChild(table(["partition", "owner", "epoch", "lag", "pending"],
    g.partitions.map((p) => [p.partition, p.owner, p.epoch, p.lag, p.pending])));
  if (session.canChange) {
    const again = async (text) => { await showGroup(topic, group); say(text); };
    box.appendChild(g.paused
      ? button("Resume", async () => { await api(`${path}/resume`, {}); await again("resumed"); })
      : button("Pause", async () => { await api(`${path}/pause`, {}); await again("paused"); }));
    const to = input("reset-to", "earliest", "earliest, latest, an RFC 3339 time or a stream id");
    box.appendChild(el("span", "Reset to "));
    box.appendChild(to);
    const preview = el("div");
    preview.id = "reset-preview";
    box.appendChild(button("Preview reset", async () => {
      const plan = await api(`${path}/reset?to=${enc(to.value)}`);
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
  document.getElementById("detail").replaceChildren(box);
}

async function showDeadLetters(topic) {
  const { dead_letters } = await api(`/topics/${enc(topic)}/dlq?limit=100`);
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
    t.appendChild(row([session.canChange ? pick : "", link(pick.value, "dead-letter", topic, pick.value),
      d.group, d.attempts, d.error, when(d.failed_at_ms)]));
  }
  box.appendChild(t);
  if (session.canChange && dead_letters.length > 0) {
    const path = `/topics/${enc(topic)}/dlq`;
    const picked = () => boxes.filter((b) => b.checked).map((b) => b.value);
    const done = async (text) => { await showDeadLetters(topic); say(text); await tick(); };
    const replay = (label, to, all) => button(label, async () => {
      const body = all ? { all: true, to } : { ids: picked(), to };
      if (!all && body.ids.length === 0) { say("select dead letters first"); return; }
      const r = await api(`${path}/replay`, body);
      await done(`replayed ${r.replayed}`);
    });
    box.append(
      replay("Replay selected to their group", "group", false),
      replay("Replay selected to the whole topic", "topic", false),
      replay("Replay all to their group", "group", true),
      replay("Replay all to the whole topic", "topic", true),
      button("Purge all", async () => {
        if (!window.confirm(`Delete all ${dead_letters.length} dead letters of ${topic} for good?`)) return;
        const r = await api(`${path}/purge`, { all: true });
        await done(`purged ${r.purged}`);
      }),
    );
  }
  document.getElementById("detail").replaceChildren(box);
}

async function showDeadLetter(topic, id) {
  const d = await api(`/topics/${enc(topic)}/dlq/${enc(id)}`);
  const box = el("div");
  box.appendChild(el("h2", `Dead letter ${id} of ${topic}`));
  box.appendChild(table(["", ""], [
    ["message", link(d.message_id, "message", topic, d.message_id)],
    ["group", d.group], ["attempts", d.attempts], ["failed at", d.failed_at], ["key", d.key],
  ]));
  box.appendChild(el("h3", "Error"));
  box.appendChild(el("pre", d.error));
  box.appendChild(el("h3", "Payload"));
  box.appendChild(el("pre", d.data !== undefined ? JSON.stringify(d.data, null, 2) : `raw (base64): ${d.raw_base64 || ""}`));
  box.appendChild(el("h3", "Headers"));
  box.appendChild(table(["header", "value"], Object.entries(d.headers || {})));
  if (session.canChange) {
    const path = `/topics/${enc(topic)}/dlq`;
    const back = async (text) => { location.hash = `#/dlq/${enc(topic)}`; say(text); };
    box.append(
      button("Replay to its group", async () => back(`replayed ${(await api(`${path}/replay`, { ids: [id], to: "group" })).replayed}`)),
      button("Replay to the whole topic", async () => back(`replayed ${(await api(`${path}/replay`, { ids: [id], to: "topic" })).replayed}`)),
    );
  }
  document.getElementById("detail").replaceChildren(box);
}

async function showSchedules() {
  const { schedules } = await api("/schedules");
  const box = el("div");
  box.appendChild(el("h2", `Schedules (${schedules.length})`));
  const t = el("table");
  t.appendChild(row(["name", "cron", "zone", "topic", "key", "data", "next fires", "fired through", ""], true));
  for (const s of schedules) {
    const next = el("div");
    for (const f of s.next_fires) next.appendChild(el("div", f));
    const remove = session.canChange ? button("Remove", async () => {
      if (!window.confirm(`Remove schedule ${s.name}?`)) return;
      await api(`/schedules/${enc(s.name)}`, undefined, "DELETE");
      await showSchedules();
      say(`removed ${s.name}`);
    }) : "";
    t.appendChild(row([s.name, s.cron, s.tz || "UTC", link(s.topic, "topic", s.topic), s.key,
      JSON.stringify(s.data), next, s.fired_through, remove]));
  }
  box.appendChild(t);
  if (session.canChange) box.appendChild(scheduleForm());
  document.getElementById("detail").replaceChildren(box);
}

function scheduleForm() {
  const form = el("form", null, "search");
  form.id = "schedule-add";
  const fields = {
    name: input("schedule-name", "", "nightly-report"),
    cron: input("schedule-cron", "", "sec min hour day month weekday"),
    tz: input("schedule-tz", "", "UTC or Europe/Paris"),
    topic: input("schedule-topic", "", "topic"),
    key: input("schedule-key", "", "key (optional)"),
    data: input("schedule-data", "", "{\"report\": \"daily\"}"),
  };
  form.appendChild(el("h3", "Add a schedule"));
  for (const [k, i] of Object.entries(fields)) form.appendChild(labelled(k, i));
  const add = el("button", "Add schedule");
  add.type = "submit";
  form.appendChild(add);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      let data;
      try { data = JSON.parse(fields.data.value || "null"); } catch { data = fields.data.value; }
      const spec = { name: fields.name.value.trim(), cron: fields.cron.value.trim(), topic: fields.topic.value.trim(), data };
      if (fields.tz.value.trim()) spec.tz = fields.tz.value.trim();
      if (fields.key.value.trim()) spec.key = fields.key.value.trim();
      const added = await api("/schedules", spec);
      await showSchedules();
      say(`added ${added.name}: next fire ${added.next_fires[0] || "never"}`);
    } catch (err) { say(`failed: ${err.message}`); }
  });
  return form;
}
