/* Options: the server URL and API key, checked on save with an authenticated read. */
"use strict";

const $ = (id) => document.getElementById(id);

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

$("open-dashboard").addEventListener("click", () => {
  const serverUrl = $("server-url").value.trim().replace(/\/+$/, "");
  if (serverUrl) window.open(`${serverUrl}/app/`, "_blank", "noopener");
});

$("budget").addEventListener("change", () =>
  chrome.runtime.sendMessage({ type: "settings", changes: { budgetMs: Number($("budget").value) } }),
);

load();
