"use strict";
// The page's start: who this browser is to the server, the navigation
// (views are addressed by the hash: #/topic/NAME, #/group/TOPIC/GROUP,
// #/message/TOPIC/ID, #/dlq/TOPIC, #/dead-letter/TOPIC/ID, #/schedules),
// and the overview refreshed every few seconds.

const views = {
  "topic": (t) => showTopic(t),
  "message": (t, id) => showMessage(t, id),
  "group": (t, g) => showGroup(t, g),
  "dlq": (t) => showDeadLetters(t),
  "dead-letter": (t, id) => showDeadLetter(t, id),
  "schedules": () => showSchedules(),
};

async function route() {
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = views[name];
  if (!view) { document.getElementById("detail").replaceChildren(); return; }
  try { await view(...args); } catch (e) { say(`failed: ${e.message}`); }
}

async function tick() {
  try {
    await overview();
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = e.status === 401
      ? "this server needs its token: sign in"
      : `cannot refresh: ${e.message}`;
  }
}

// Sign in (a form the server answers with a session cookie) or out.
function authArea() {
  const area = document.getElementById("auth");
  area.replaceChildren();
  if (session.signedIn) {
    const out = el("form");
    out.method = "post";
    out.action = "logout";
    const b = el("button", "Sign out");
    b.type = "submit";
    out.appendChild(b);
    area.appendChild(out);
  } else if (session.tokenRequired && !session.readOnly) {
    const a = el("a", "Sign in to make changes");
    a.href = "login";
    area.appendChild(a);
  }
}

async function start() {
  try {
    const s = await api("/server");
    Object.assign(session, {
      readOnly: s.read_only, tokenRequired: s.token_required, signedIn: s.signed_in, csrf: s.csrf,
      canChange: !s.read_only && (!s.token_required || s.signed_in),
    });
  } catch (e) { /* shown by the first refresh */ }
  authArea();
  window.addEventListener("hashchange", route);
  await Promise.all([tick(), route()]);
  setInterval(tick, 3000);
}
start();
