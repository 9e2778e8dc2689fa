/*
 * The privileged side of the extension: the only holder of the server URL and key, and the
 * only caller of the server. Content scripts send it captures and context requests; the popup
 * and options pages read status and change settings through it.
 */

import { FALLBACK_LIMITS, browserTimeZone, siteOf, validCapture } from "./capture.js";
import { connectMessage, connectTo, isConnectMessage, welcome } from "./connect.js";
import { CONTENT_MESSAGES } from "./messages.js";
import { clearRefused, enqueue, flush, queueStatus, refusedCaptures } from "./queue.js";
import { call, check } from "./server.js";
import { SITES, getSettings, ready, updateSettings } from "./settings.js";

// Context requests per tab: a person's typing and sends stay far below; a page script
// asking again and again does not.
const CONTEXT_PER_WINDOW = 8;
const CONTEXT_WINDOW_MS = 10000;
/** @type {Map<number, number[]>} */
const contextCalls = new Map();

function fromExtensionPage(sender) {
  // The popup and options pages, also when opened in a tab; content scripts carry the site's URL.
  return sender.id === chrome.runtime.id && (sender.url || "").startsWith(chrome.runtime.getURL(""));
}

/* The site a content script runs on, from the browser's word about its frame. */
function senderSite(sender) {
  if (!sender.tab || sender.frameId !== 0) return null;
  return siteOf(sender.origin || sender.url);
}

function withinRate(tabId) {
  const now = Date.now();
  const recent = (contextCalls.get(tabId) || []).filter((at) => now - at < CONTEXT_WINDOW_MS);
  const allowed = recent.length < CONTEXT_PER_WINDOW;
  if (allowed) recent.push(now);
  contextCalls.set(tabId, recent);
  return allowed;
}

async function siteSettings(site) {
  const settings = await getSettings();
  const own = settings.sites[site];
  return { capture: own.capture, inject: own.inject, paused: settings.paused, budgetMs: settings.budgetMs };
}

const NO_CONTEXT = { context: "", memories: [] };

async function context(site, tabId, prompt) {
  const settings = await getSettings();
  const usable = typeof prompt === "string" && prompt.trim();
  if (settings.paused || settings.sites[site].inject === "off" || !usable || !withinRate(tabId)) return NO_CONTEXT;
  try {
    // The server reads a query's start only; a longer prompt would be refused whole.
    const query = prompt.slice(0, FALLBACK_LIMITS.max_text_chars);
    // The server counts "yesterday" and each memory's day in the person's own time zone.
    const zone = browserTimeZone();
    const body = { prompt: query, top_k: 5, max_tokens: 600, ...(zone ? { time_zone: zone } : {}) };
    const answer = await call("POST", "/context", body, { timeoutMs: settings.budgetMs + 2000, settings });
    const memories = (answer.memories || []).map(({ id, text, score, provider }) => ({ id, text, score, provider }));
    return { context: answer.context || "", memories };
  } catch {
    return NO_CONTEXT;
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
  const site = senderSite(sender);
  if (!site || !CONTENT_MESSAGES.includes(message.type)) return null;
  switch (message.type) {
    case "hello":
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
      const zone = browserTimeZone();
      const queued = await enqueue(zone ? { ...item, time_zone: zone } : item);
      flush();
      return queued;
    }
    case "context":
      return context(site, sender.tab.id, message.prompt);
    case "injected":
      await chrome.storage.session.set({
        [`injected:${sender.tab.id}`]: {
          site,
          at: Date.now(),
          memories: (Array.isArray(message.memories) ? message.memories : [])
            .slice(0, 20)
            .map(({ id, text }) => ({ id: String(id), text: String(text).slice(0, 500) })),
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
    case "connect":
      // An empty key field keeps the saved key, also with a new URL.
      return connectTo(message.serverUrl, message.apiKey || "");
    case "recheck": {
      const settings = await getSettings();
      const result = await check(settings.serverUrl, settings.apiKey);
      await chrome.storage.local.set({ connection: { ...result, at: Date.now() } });
      return result;
    }
    case "flush":
      await flush();
      return queueStatus();
    case "refused":
      return refusedCaptures();
    case "clearRefused":
      await clearRefused();
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
chrome.tabs.onRemoved.addListener((tabId) => {
  contextCalls.delete(tabId);
  chrome.storage.session.remove(`injected:${tabId}`);
});

ready().then(flush);
