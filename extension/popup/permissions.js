/* Firefox lets a person withhold or withdraw the extension's sites and server (Chromium grants
 * them at install): the popup says so, and Allow asks for them again, on that click. */
"use strict";

(async () => {
  const manifest = chrome.runtime.getManifest();
  const origins = [...new Set([...(manifest.host_permissions || []), ...manifest.content_scripts.flatMap((script) => script.matches)])];
  const notice = document.getElementById("permissions");
  // Not permissions.contains: Chromium answers false there for a content script's sites.
  const granted = new Set((await chrome.permissions.getAll()).origins || []);
  if (origins.every((origin) => granted.has(origin))) return;
  notice.hidden = false;
  document.getElementById("grant").addEventListener("click", async () => {
    notice.hidden = await chrome.permissions.request({ origins });
  });
})();
