// Switchboard admin page: talks to admin/api with the token from admin/auth, never with the API key.
// Every value from the server reaches the page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "switchboard-admin-token";
const REVOKE_FOR_SECONDS = 30 * 24 * 3600;
const OVERVIEW_INTERVAL_MS = 3000;

const page = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  insecure: false,
  lookup: null, // the last sessions lookup: {user, expression}
  overviewTimer: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function notify(text, isError) {
  const notice = $("notice");
  notice.textContent = text;
  notice.className = isError ? "error" : "ok";
  notice.hidden = !text;
}

class SessionEnded extends Error {}

async function api(method, params) {
  const response = await fetch("admin/api", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "token " + page.token },
    body: JSON.stringify({ method, params: params || {} }),
  });
  if (response.status === 401) {
    await response.arrayBuffer();
    logout();
    throw new SessionEnded("the admin session ended: log in again");
  }
  if (!response.ok) {
    await response.arrayBuffer();
    throw new Error(method + ": HTTP " + response.status);
  }
  const answer = await response.json();
  if (answer.error) throw new Error(method + ": " + answer.error.message + " (" + answer.error.code + ")");
  return answer.result;
}

// -- login --------------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const body = new URLSearchParams({ password: $("password").value });
  const response = await fetch("admin/auth", { method: "POST", body });
  const answer = await response.json();
  if (!response.ok) {
    $("login-error").textContent = "Wrong password.";
    return;
  }
  page.token = answer.token;
  sessionStorage.setItem(TOKEN_KEY, page.token);
  $("password").value = "";
  route();
}

function logout() {
  page.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  route();
}

// -- pages --------------------------------------------------------------------------------------

const PAGES = ["overview", "sessions", "channels"];

function route() {
  const loggedIn = page.insecure || Boolean(page.token);
  const wanted = location.hash.slice(1);
  const current = loggedIn ? (PAGES.includes(wanted) ? wanted : "overview") : "login";
  for (const name of ["login", ...PAGES]) $(name).hidden = name !== current;
  $("nav").hidden = !loggedIn;
  $("logout").hidden = !loggedIn || page.insecure;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === current);
  }
  clearInterval(page.overviewTimer);
  if (current === "overview") {
    refreshOverview();
    page.overviewTimer = setInterval(refreshOverview, OVERVIEW_INTERVAL_MS);
  } else if (current === "channels") {
    listChannels();
  }
}

function duration(seconds) {
  const parts = [];
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "m"]]) {
    if (seconds >= size) {
      parts.push(Math.floor(seconds / size) + unit);
      seconds %= size;
    }
  }
  parts.push(Math.floor(seconds) + "s");
  return parts.slice(0, 2).join(" ");
}

const mib = (bytes) => (bytes / 1048576).toFixed(1) + " MiB";

async function refreshOverview() {
  let result;
  try {
    result = await api("info", {});
  } catch (err) {
    notify(err.message, true);
    return;
  }
  const rows = result.nodes.map((node) => {
    const shards = node.shards || [];
    const rss = shards.reduce((sum, shard) => sum + (shard.rss || 0), 0);
    const down = shards.filter((shard) => shard.unavailable).length;
    return el(
      "tr",
      {},
      el("td", {}, node.name, el("div", { className: "muted" }, node.uid)),
      el("td", {}, node.version),
      el("td", { className: "num" }, node.num_clients),
      el("td", { className: "num" }, node.num_users),
      el("td", { className: "num" }, node.num_channels),
      el("td", { className: "num" }, node.num_subs),
      el("td", { className: "num" }, shards.length + (down ? " (" + down + " down)" : "")),
      el("td", { className: "num" }, rss ? mib(rss) : "—"),
      el("td", {}, duration(node.uptime)),
    );
  });
  $("nodes").tBodies[0].replaceChildren(...rows);
  const sum = (key) => result.nodes.reduce((total, node) => total + node[key], 0);
  $("totals").replaceChildren(
    ...[
      ["Nodes", result.nodes.length],
      ["Clients", sum("num_clients")],
      ["Users", sum("num_users")],
      ["Channels", sum("num_channels")],
    ].map(([label, value]) => el("div", {}, el("b", {}, value), label)),
  );
  $("overview-updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
}

// -- sessions -----------------------------------------------------------------------------------

function lookupSessions(event) {
  event.preventDefault();
  const user = $("lookup-user").value.trim();
  const expression = $("lookup-expression").value.trim();
  if (!user && !expression) {
    $("sessions-status").textContent = "Give a user ID or a CEL expression.";
    return;
  }
  page.lookup = { user, expression };
  showSessions();
}

async function showSessions() {
  const { user, expression } = page.lookup;
  const params = { sort: "-connected_at_ms" };
  if (user) params.user = user;
  if (expression) params.expression = expression;
  $("user-actions").hidden = !user;
  $("user-name").textContent = user;
  let result;
  try {
    result = await api("connections", params);
  } catch (err) {
    $("sessions-status").textContent = err.message;
    $("sessions-table").tBodies[0].replaceChildren();
    return;
  }
  const entries = Object.entries(result.connections || {});
  $("sessions-status").textContent =
    entries.length + (entries.length === 1 ? " connection" : " connections") +
    (result.unavailable_shards ? " (shards not answering: " + result.unavailable_shards.join(", ") + ")" : "");
  $("sessions-table").tBodies[0].replaceChildren(...entries.map(([client, info]) => sessionRow(client, info)));
}

function sessionRow(client, info) {
  const state = info.state || {};
  const token = state.connection_token || {};
  const channels = Object.keys(state.channels || {});
  const app = [info.app_name, info.app_version].filter(Boolean).join(" ");
  const actions = el(
    "td",
    { className: "actions" },
    el("button", { type: "button", dataset: { action: "disconnect", client } }, "Disconnect"),
    el("button", { type: "button", dataset: { action: "reconnect", client } }, "Reconnect"),
  );
  if (token.uid) {
    actions.append(el("button", { type: "button", dataset: { action: "revoke", client, uid: token.uid } }, "Revoke token"));
  }
  const row = el(
    "tr",
    { dataset: { client, user: info.user || "" } },
    el("td", { className: "mono" }, client),
    el("td", {}, info.user || "(anonymous)"),
    el("td", { className: "app" }, app || "—"),
    el("td", {}, info.transport),
    el("td", {}, info.protocol),
    el("td", {}, new Date(info.connected_at_ms).toLocaleString()),
    el("td", { className: "num" }, info.ping_pong_latency_ms >= 0 ? info.ping_pong_latency_ms + " ms" : "—"),
    el("td", {}, channels.join(", ") || "—"),
    el("td", { className: "mono" }, token.uid || "—"),
    el("td", {}, token.issued_at ? new Date(token.issued_at * 1000).toLocaleString() : "—"),
    el("td", { className: "mono" }, state.meta ? JSON.stringify(state.meta) : "—"),
    el("td", { className: "mono" }, info.labels ? JSON.stringify(info.labels) : "—"),
    actions,
  );
  return row;
}

async function sessionAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const { action, client, uid } = button.dataset;
  const user = button.closest("tr").dataset.user;
  const calls = {
    disconnect: ["disconnect", { user, client }],
    reconnect: ["disconnect", { user, client, disconnect: { code: 3011, reason: "force reconnect" } }],
    revoke: ["revoke_token", { uid, expire_at: Math.floor(Date.now() / 1000) + REVOKE_FOR_SECONDS }],
  };
  await act(...calls[action], button.textContent + " " + client);
}

async function userAction(event) {
  const button = event.target.closest("button[data-user-action]");
  if (!button || !page.lookup || !page.lookup.user) return;
  await act(button.dataset.userAction, { user: page.lookup.user }, button.textContent + " " + page.lookup.user);
}

async function act(method, params, what) {
  try {
    await api(method, params);
    notify(what + ": done.", false);
  } catch (err) {
    notify(what + ": " + err.message, true);
    return;
  }
  if (page.lookup) await showSessions();
}

// -- channels -----------------------------------------------------------------------------------

async function listChannels(event) {
  if (event) event.preventDefault();
  $("presence").hidden = true;
  let result;
  try {
    result = await api("channels", { pattern: $("channel-pattern").value.trim() });
  } catch (err) {
    $("channels-status").textContent = err.message;
    return;
  }
  const entries = Object.entries(result.channels || {}).sort(([a], [b]) => a.localeCompare(b));
  $("channels-status").textContent = entries.length + (entries.length === 1 ? " channel" : " channels");
  $("channels-table").tBodies[0].replaceChildren(
    ...entries.map(([channel, info]) =>
      el(
        "tr",
        {},
        el("td", { className: "mono" }, channel),
        el("td", { className: "num" }, info.num_clients),
        el("td", {}, el("button", { type: "button", dataset: { presence: channel } }, "Presence")),
      ),
    ),
  );
}

async function showPresence(event) {
  const button = event.target.closest("button[data-presence]");
  if (!button) return;
  const channel = button.dataset.presence;
  $("presence-channel").textContent = channel;
  $("presence").hidden = false;
  let result;
  try {
    result = await api("presence", { channel });
  } catch (err) {
    $("presence-table").tBodies[0].replaceChildren(el("tr", {}, el("td", { colSpan: 2 }, err.message)));
    return;
  }
  $("presence-table").tBodies[0].replaceChildren(
    ...Object.values(result.presence || {}).map((info) =>
      el("tr", {}, el("td", { className: "mono" }, info.client), el("td", {}, info.user || "(anonymous)")),
    ),
  );
}

// -- start --------------------------------------------------------------------------------------

async function start() {
  try {
    const settings = await (await fetch("admin/settings")).json();
    page.insecure = Boolean(settings.insecure);
    $("version").textContent = "v" + settings.version;
  } catch (err) {
    notify("cannot reach the server: " + err.message, true);
  }
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("lookup").addEventListener("submit", lookupSessions);
  $("sessions-table").addEventListener("click", sessionAction);
  $("user-actions").addEventListener("click", userAction);
  $("channel-search").addEventListener("submit", listChannels);
  $("channels-table").addEventListener("click", showPresence);
  window.addEventListener("hashchange", route);
  window.addEventListener("unhandledrejection", (event) => notify(String(event.reason.message || event.reason), true));
  route();
}

start();
