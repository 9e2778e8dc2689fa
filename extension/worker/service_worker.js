/*
 * The privileged side of the extension: the only holder of the server URL and key, and the
 * only caller of the server. Content scripts send it captures and context requests; the popup
 * and options pages read status and change settings through it.
 */

import { connectMessage, isConnectMessage, welcome } from "./connect.js";
import { enqueue, flush, queueStatus } from "./queue.js";
import { call, check } from "./server.js";
import { SITES, getSettings, ready, updateSettings } from "./settings.js";

const MAX_TEXT = 100000;
const MAX_FIELD = 2048;

const isText = (value, max) => typeof value === "string" && value.trim().length > 0 && value.length <= max;
const isField = (value) => value === null || value === undefined || (typeof value === "string" && value.length <= MAX_FIELD);

function fromExtensionPage(sender) {
  // The popup and options pages, also when opened in a tab; content scripts carry the site's URL.
  return sender.id === chrome.runtime.id && (sender.url || "").startsWith(chrome.runtime.getURL(""));
}

function validCapture(item, site) {
  if (!item || typeof item !== "object" || item.provider !== site) return null;
  const common = ["conversation_id", "url"].every((name) => isField(item[name]));
  if (!common) return null;
  if ("response" in item) {
    if (!isText(item.response, MAX_TEXT) || !isText(item.message_id, MAX_FIELD) || !isText(item.response_message_id, MAX_FIELD)) return null;
    const { response, message_id, response_message_id, conversation_id, provider, url } = item;
    return { response, message_id, response_message_id, conversation_id, provider, url };
  }
  if (!isText(item.prompt, MAX_TEXT) || !isText(item.message_id, MAX_FIELD)) return null;
  const { prompt, message_id, conversation_id, provider, url } = item;
  return { prompt, message_id, conversation_id, provider, url };
}

async function siteSettings(site) {
  const settings = await getSettings();
  const own = settings.sites[site];
  return { capture: own.capture, inject: own.inject, paused: settings.paused, budgetMs: settings.budgetMs };
}

async function context(site, prompt) {
  const settings = await getSettings();
  if (settings.paused || settings.sites[site].inject === "off" || !isText(prompt, MAX_TEXT)) return { context: "", memories: [] };
  try {
    const answer = await call("POST", "/context", { prompt, top_k: 5, max_tokens: 600 }, { timeoutMs: settings.budgetMs + 2000, settings });
    const memories = (answer.memories || []).map(({ id, text, score, provider }) => ({ id, text, score, provider }));
    return { context: answer.context || "", memories };
  } catch {
    return { context: "", memories: [] };
  }
}

async function status(tabId) {
  const settings = await getSettings();
  const { connection, health } = await chrome.storage.local.get(["connection", "health"]);
  const injected = tabId ? (await chrome.storage.session.get(`injected:${tabId}`))[`injected:${tabId}`] : null;
  return {
    server: settings.serverUrl,
    hasKey: Boolean(settings.apiKey),
    connection: connection || null,
    paused: settings.paused,
    budgetMs: settings.budgetMs,
    queue: await queueStatus(),
    sites: Object.entries(SITES).map(([id, name]) => ({ id, name, ...settings.sites[id], health: (health || {})[id] || null })),
    injected: injected || null,
    dashboard: `${settings.serverUrl}/app/`,
  };
}

async function fromContentScript(message, sender) {
  const site = message.site;
  if (!SITES[site] || !sender.tab) return null;
  switch (message.type) {
    case "hello":
      flush();
      return siteSettings(site);
    case "health": {
      const { health = {} } = await chrome.storage.local.get("health");
      health[site] = { ok: Boolean(message.ok), reason: String(message.reason || "").slice(0, 200), at: Date.now() };
      await chrome.storage.local.set({ health });
      return true;
    }
    case "capture": {
      const own = await siteSettings(site);
      const item = validCapture(message.item, site);
      if (!item || !own.capture || own.paused) return false;
      await enqueue(item);
      flush();
      return true;
    }
    case "context":
      return context(site, message.prompt);
    case "injected":
      await chrome.storage.session.set({
        [`injected:${sender.tab.id}`]: {
          site,
          at: Date.now(),
          memories: (message.memories || []).slice(0, 20).map(({ id, text }) => ({ id: String(id), text: String(text).slice(0, 500) })),
        },
      });
      return true;
    default:
      return null;
  }
}

async function fromPage(message) {
  switch (message.type) {
    case "status":
      return status(message.tabId);
    case "settings":
      await updateSettings(message.changes || {});
      return status(message.tabId);
    case "connect": {
      const result = await check(message.serverUrl.replace(/\/+$/, ""), message.apiKey);
      await updateSettings({ serverUrl: message.serverUrl, apiKey: message.apiKey });
      await chrome.storage.local.set({ connection: { ...result, at: Date.now() }, retry: { failures: 0, nextAt: 0, lastError: "" } });
      if (result.ok) flush();
      return result;
    }
    case "recheck": {
      const settings = await getSettings();
      const result = await check(settings.serverUrl, settings.apiKey);
      await chrome.storage.local.set({ connection: { ...result, at: Date.now() } });
      return result;
    }
    case "flush":
      await flush();
      return queueStatus();
    default:
      return null;
  }
}

chrome.runtime.onMessage.addListener((message, sender, respond) => {
  if (!message || typeof message.type !== "string" || sender.id !== chrome.runtime.id) return false;
  const page = fromExtensionPage(sender);
  const handle = isConnectMessage(message)
    ? connectMessage(message, sender, page)
    : page
      ? fromPage(message)
      : fromContentScript(message, sender);
  handle.then(respond, (error) => {
    console.warn("memory layer:", error);
    respond(null);
  });
  return true;
});

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === "flush") flush();
});
chrome.runtime.onStartup.addListener(() => flush());
chrome.runtime.onInstalled.addListener((details) => ready().then(() => welcome(details)).then(flush));
chrome.tabs.onRemoved.addListener((tabId) => chrome.storage.session.remove(`injected:${tabId}`));

ready().then(flush);
