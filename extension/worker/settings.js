/* Settings in chrome.storage.local, readable only by the extension's own pages and worker.
 * A copy written by `memory-layer extension` carries config.json, applied once at install.
 *
 * Content scripts may read storage.local unless the browser is told otherwise. Where it cannot
 * be (the call fails), the key is kept in storage.session instead, which content scripts never
 * read by default: the person enters it again after a browser restart, and no page's renderer
 * can reach it. */

export const SITES = {
  chatgpt: "ChatGPT",
  claude: "Claude",
  gemini: "Gemini",
  perplexity: "Perplexity",
};
export const INJECT_MODES = ["auto", "suggest", "off"];
export const DEFAULT_URL = "http://127.0.0.1:8080";

const DEFAULTS = {
  serverUrl: DEFAULT_URL,
  apiKey: "",
  paused: false,
  budgetMs: 800,
  sites: Object.fromEntries(Object.keys(SITES).map((id) => [id, { capture: true, inject: "suggest" }])),
};

let loaded = null;
// Whether storage.local is closed to content scripts; the key lives there only if so.
let localIsPrivate = false;

async function applyConfigFile() {
  const { configApplied } = await chrome.storage.local.get("configApplied");
  if (configApplied) return;
  let config = {};
  try {
    const response = await fetch(chrome.runtime.getURL("config.json"));
    if (response.ok) config = await response.json();
  } catch {
    config = {};
  }
  const values = { configApplied: true };
  if (typeof config.url === "string" && config.url) values.serverUrl = config.url.replace(/\/+$/, "");
  if (typeof config.key === "string") await saveKey(config.key);
  if (INJECT_MODES.includes(config.inject)) {
    values.sites = Object.fromEntries(Object.keys(SITES).map((id) => [id, { capture: true, inject: config.inject }]));
  }
  await chrome.storage.local.set(values);
}

export function ready() {
  if (!loaded) {
    loaded = (async () => {
      try {
        await chrome.storage.local.setAccessLevel({ accessLevel: "TRUSTED_CONTEXTS" });
        localIsPrivate = true;
      } catch {
        localIsPrivate = false;
        const { apiKey } = await chrome.storage.local.get("apiKey");
        if (apiKey) await chrome.storage.session.set({ apiKey });
        await chrome.storage.local.remove("apiKey");
      }
      await applyConfigFile();
    })();
  }
  return loaded;
}

function saveKey(apiKey) {
  return (localIsPrivate ? chrome.storage.local : chrome.storage.session).set({ apiKey });
}

export async function getSettings() {
  await ready();
  const stored = await chrome.storage.local.get(["serverUrl", "apiKey", "paused", "budgetMs", "sites"]);
  if (!localIsPrivate) stored.apiKey = (await chrome.storage.session.get("apiKey")).apiKey || "";
  const sites = { ...DEFAULTS.sites };
  for (const id of Object.keys(SITES)) sites[id] = { ...DEFAULTS.sites[id], ...(stored.sites || {})[id] };
  return { ...DEFAULTS, ...stored, sites };
}

export async function updateSettings(changes) {
  const current = await getSettings();
  const next = {};
  if (typeof changes.paused === "boolean") next.paused = changes.paused;
  if (Number.isFinite(changes.budgetMs)) next.budgetMs = Math.min(800, Math.max(50, changes.budgetMs));
  if (changes.site && SITES[changes.site]) {
    const site = { ...current.sites[changes.site] };
    if (typeof changes.capture === "boolean") site.capture = changes.capture;
    if (INJECT_MODES.includes(changes.inject)) site.inject = changes.inject;
    next.sites = { ...current.sites, [changes.site]: site };
  }
  if (typeof changes.serverUrl === "string") next.serverUrl = changes.serverUrl.replace(/\/+$/, "");
  // An empty key field keeps the saved key.
  if (typeof changes.apiKey === "string" && changes.apiKey) await saveKey(changes.apiKey);
  await chrome.storage.local.set(next);
  return getSettings();
}
