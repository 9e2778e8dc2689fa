/* The popup: connection, queue, per-site toggles and health, pause, and what went into this
 * tab's last prompt. Everything goes through the service worker; text only, never HTML. */
"use strict";

const $ = (id) => document.getElementById(id);
let tabId = null;

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function siteRow(site) {
  const row = element("li", undefined, { "data-site": site.id });
  row.append(element("strong", site.name));
  if (site.health && !site.health.ok) {
    row.append(element("p", `${site.name}: page not recognised — capture paused`, { class: "warning", role: "alert" }));
  }
  const capture = element("input", undefined, { type: "checkbox", id: `capture-${site.id}` });
  capture.checked = site.capture;
  capture.addEventListener("change", () => change({ site: site.id, capture: capture.checked }));
  const captureLabel = element("label", undefined, { for: `capture-${site.id}`, class: "row" });
  captureLabel.append(capture, ` Capture on ${site.name}`);
  const inject = element("select", undefined, { id: `inject-${site.id}` });
  for (const [value, label] of [["auto", "Auto"], ["suggest", "Suggest"], ["off", "Off"]]) {
    inject.append(element("option", label, { value }));
  }
  inject.value = site.inject;
  inject.addEventListener("change", () => change({ site: site.id, inject: inject.value }));
  const injectLabel = element("label", `Memories on ${site.name} `, { for: `inject-${site.id}`, class: "row" });
  row.append(captureLabel, injectLabel, inject);
  return row;
}

function render(status) {
  if (!status) return;
  const connection = status.connection;
  const who = connection && connection.message && connection.message.startsWith("connected as ")
    ? connection.message.slice("connected ".length)
    : "";
  $("connection").textContent = !status.hasKey
    ? "Not connected: no key (open Settings)"
    : connection && !connection.ok
      ? `Not connected: ${connection.message}`
      : who
        ? `Connected ${who}`
        : "Connected";
  $("server").textContent = status.server;
  const queue = status.queue;
  $("queue").textContent =
    `Queue: ${queue.length} waiting` + (queue.length && queue.lastError ? ` (${queue.lastError})` : "") +
    (queue.dropped ? `, ${queue.dropped} dropped when full` : "");
  $("refused").hidden = !queue.refused;
  $("refused-text").textContent = queue.refused
    ? `${queue.refused} refused by the server: ${queue.refusedReasons[queue.refusedReasons.length - 1] || ""}`
    : "";
  $("paused").checked = status.paused;
  $("sites").replaceChildren(...status.sites.map(siteRow));
  const memories = (status.injected && status.injected.memories) || [];
  $("injected").replaceChildren(...memories.map((memory) => element("li", memory.text)));
  $("no-injected").hidden = memories.length > 0;
  $("dashboard").href = status.dashboard;
}

async function change(changes) {
  render(await chrome.runtime.sendMessage({ type: "settings", changes, tabId }));
}

async function refresh() {
  render(await chrome.runtime.sendMessage({ type: "status", tabId }));
}

$("paused").addEventListener("change", () => change({ paused: $("paused").checked }));
$("export-refused").addEventListener("click", async () => {
  const refused = await chrome.runtime.sendMessage({ type: "refused" });
  const link = element("a", undefined, { download: "memory-layer-refused.json" });
  link.href = URL.createObjectURL(new Blob([JSON.stringify(refused, null, 2)], { type: "application/json" }));
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
});
$("options").addEventListener("click", (event) => {
  event.preventDefault();
  chrome.runtime.openOptionsPage();
});

(async () => {
  const query = new URLSearchParams(location.search).get("tab");
  if (query) tabId = Number(query);
  else {
    const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
    tabId = tab ? tab.id : null;
  }
  await refresh();
  setInterval(refresh, 2000);
})();
