/* Options: the server URL, and either Connect (a key made on the dashboard and handed over
 * without copying) or an API key pasted and checked on save with an authenticated read. */
"use strict";

const $ = (id) => document.getElementById(id);
let awaitingDashboard = false;

function originPattern(url) {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.hostname}/*`;
}

async function load() {
  const status = await chrome.runtime.sendMessage({ type: "status" });
  $("server-url").value = status.server;
  $("api-key").value = "";
  $("api-key").placeholder = status.hasKey ? "(a key is saved; type a new one to replace it)" : "mlk_…";
  $("budget").value = status.budgetMs;
}

$("connect").addEventListener("submit", async (event) => {
  event.preventDefault();
  const serverUrl = $("server-url").value.trim().replace(/\/+$/, "");
  const status = await chrome.runtime.sendMessage({ type: "status" });
  let apiKey = $("api-key").value.trim();
  if (!apiKey && status.hasKey && serverUrl === status.server) {
    $("result").textContent = (await chrome.runtime.sendMessage({ type: "recheck" })).message;
    return;
  }
  try {
    // The extension may call only servers the person allowed; asked here, on their click.
    const granted = await chrome.permissions.request({ origins: [originPattern(serverUrl)] });
    if (!granted) {
      $("result").textContent = `Not saved: access to ${serverUrl} was not allowed.`;
      return;
    }
  } catch (error) {
    $("result").textContent = `Not saved: ${error.message}`;
    return;
  }
  $("result").textContent = "Checking…";
  const result = await chrome.runtime.sendMessage({ type: "connect", serverUrl, apiKey });
  $("result").textContent = result.ok ? `Saved: ${result.message}.` : `Saved, but not connected: ${result.message}.`;
  $("api-key").value = "";
  apiKey = "";
});

$("connect-dashboard").addEventListener("click", async () => {
  const serverUrl = $("server-url").value.trim().replace(/\/+$/, "");
  let granted = false;
  try {
    // First thing in the click: Firefox grants a permission only from the person's gesture.
    granted = await chrome.permissions.request({ origins: [originPattern(serverUrl)] });
  } catch (error) {
    $("result").textContent = `Not connected: ${error.message}`;
    return;
  }
  if (!granted) {
    $("result").textContent = `Not connected: access to ${serverUrl} was not allowed.`;
    return;
  }
  const started = await chrome.runtime.sendMessage({ type: "connect-start", serverUrl });
  awaitingDashboard = Boolean(started && started.ok);
  $("result").textContent = started && started.ok
    ? "Approve the connection on the dashboard that just opened."
    : "Not connected: the dashboard could not be opened.";
});

// The worker says how a connection made on the dashboard ended (content scripts' messages come
// with their tab). Not async: in Firefox a listener's promise would answer for the worker.
chrome.runtime.onMessage.addListener((message, sender) => {
  if (!awaitingDashboard || sender.tab || !message || message.type !== "connected") return false;
  awaitingDashboard = false;
  $("result").textContent = message.ok ? `Saved: ${message.message}.` : `Saved, but not connected: ${message.message}.`;
  load();
  return false;
});

$("budget").addEventListener("change", () =>
  chrome.runtime.sendMessage({ type: "settings", changes: { budgetMs: Number($("budget").value) } }),
);

load();
