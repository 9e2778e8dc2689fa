/*
 * Connecting in one click. The options page starts it: the worker keeps a one-time nonce for
 * the server's origin, runs a content script (connect/bridge.js) on that server's dashboard
 * only while the connection is awaited, and opens the dashboard. There, signed in, the person
 * approves; the dashboard makes a key for this browser and posts it to the bridge with the
 * nonce, which hands it here. The key is never in a URL, never in the page's storage, and only
 * the worker keeps it (through settings.js, like a key pasted on the options page).
 */

import { flush, reset } from "./queue.js";
import { check } from "./server.js";
import { getSettings, updateSettings } from "./settings.js";

const BRIDGE = "memory-layer-connect";
const PENDING = "connectPending";
// Long enough to sign in with an emailed link, short enough that a forgotten tab expires.
const PENDING_MS = 15 * 60 * 1000;
const KEY_SHAPE = /^mlk_[A-Za-z0-9_-]{43}$/;

const SYSTEMS = [
  [/mac/i, "macOS"],
  [/win/i, "Windows"],
  [/cros/i, "ChromeOS"],
  [/linux/i, "Linux"],
];

function browserName() {
  const brands = (navigator.userAgentData?.brands || []).map((b) => b.brand);
  if (/Firefox\//.test(navigator.userAgent)) return "Firefox";
  if (/Edg\//.test(navigator.userAgent)) return "Edge";
  if (brands.includes("Brave")) return "Brave";
  return brands.includes("Google Chrome") ? "Chrome" : "Chromium";
}

/* The name the key gets on the dashboard, so the person knows which browser holds it. */
export function keyName() {
  const platform = navigator.userAgentData?.platform || navigator.platform || "";
  const system = SYSTEMS.find(([pattern]) => pattern.test(platform));
  return `Memory Layer extension (${browserName()}${system ? ` on ${system[1]}` : ""})`;
}

function nonce() {
  return Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function pending() {
  const { [PENDING]: awaited } = await chrome.storage.session.get(PENDING);
  return awaited && awaited.until > Date.now() ? awaited : null;
}

async function stopBridge() {
  await chrome.storage.session.remove(PENDING);
  try {
    await chrome.scripting.unregisterContentScripts({ ids: [BRIDGE] });
  } catch {
    /* not registered */
  }
}

async function start(serverUrl) {
  const server = new URL(serverUrl);
  const path = server.pathname.replace(/\/+$/, "");
  const url = `${server.origin}${path}`;
  await stopBridge();
  await chrome.storage.session.set({ [PENDING]: { url, origin: server.origin, nonce: nonce(), until: Date.now() + PENDING_MS } });
  // Match patterns take no port; the worker checks the exact origin of every message.
  await chrome.scripting.registerContentScripts([
    {
      id: BRIDGE,
      matches: [`${server.protocol}//${server.hostname}${path}/app/*`],
      js: ["connect/bridge.js"],
      runAt: "document_idle",
      persistAcrossSessions: false,
    },
  ]);
  await chrome.tabs.create({ url: `${url}/app/` });
  return { ok: true };
}

/* A server and key, pasted on the options page or made on the dashboard: checked with an
 * authenticated read, then kept (an empty key keeps the saved one), and what the queue learnt
 * about the server before is forgotten. */
export async function connectTo(serverUrl, apiKey) {
  const url = serverUrl.replace(/\/+$/, "");
  const result = await check(url, apiKey || (await getSettings()).apiKey);
  await updateSettings({ serverUrl: url, apiKey });
  await reset();
  await chrome.storage.local.set({ connection: { ...result, at: Date.now() } });
  if (result.ok) flush();
  return result;
}

async function receive(message, origin) {
  const awaited = await pending();
  if (!awaited || origin !== awaited.origin) return null;
  switch (message.type) {
    case "connect-request":
      return { nonce: awaited.nonce, name: keyName() };
    case "connect-key": {
      if (message.nonce !== awaited.nonce || typeof message.key !== "string" || !KEY_SHAPE.test(message.key)) return null;
      await stopBridge();
      const result = await connectTo(awaited.url, message.key);
      // The options page that started it says how it ended; it may have been closed.
      chrome.runtime.sendMessage({ type: "connected", ok: result.ok, message: result.message }).catch(() => undefined);
      return result;
    }
    case "connect-cancel":
      if (message.nonce !== awaited.nonce) return null;
      await stopBridge();
      return { ok: false, message: "cancelled" };
    default:
      return null;
  }
}

/* A fresh install without a key opens the options page, where Connect is one click away. */
export async function welcome({ reason }) {
  if (reason !== "install") return;
  try {
    const { apiKey } = await getSettings();
    if (!apiKey) await chrome.tabs.create({ url: chrome.runtime.getURL("options/options.html") });
  } catch (error) {
    console.warn("memory layer: the options page did not open", error);
  }
}

export const isConnectMessage = (message) => message.type.startsWith("connect-");

/* connect-start from the extension's own pages; the rest only from the bridge, on the
 * awaited server's dashboard, as the browser says (sender), never as the message says. */
export function connectMessage(message, sender, fromExtensionPage) {
  if (fromExtensionPage) {
    return message.type === "connect-start" && typeof message.serverUrl === "string" ? start(message.serverUrl) : Promise.resolve(null);
  }
  if (!sender.tab || !sender.url) return Promise.resolve(null);
  return receive(message, new URL(sender.url).origin);
}
