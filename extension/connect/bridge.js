/*
 * Runs on the Memory Layer dashboard only while the extension awaits a connection (registered
 * by worker/connect.js). It tells the dashboard page the one-time nonce and the name for the
 * key, takes the key the page posts back with that nonce, and hands it to the worker; the page
 * learns whether the extension is connected. Messages are taken from this window and this
 * origin only.
 */
(async () => {
  "use strict";
  const origin = location.origin;
  let request = null;
  try {
    request = await chrome.runtime.sendMessage({ type: "connect-request" });
  } catch {
    request = null;
  }
  if (!request || typeof request.nonce !== "string") return;
  const { nonce, name } = request;
  let done = false;

  const post = (message) => window.postMessage({ ...message, nonce }, origin);
  const offer = () => !done && post({ type: "memory-layer:connect-offer", name });

  window.addEventListener("message", async (event) => {
    const data = event.data;
    if (done || event.source !== window || event.origin !== origin || !data || typeof data !== "object") return;
    if (data.type === "memory-layer:connect-ready") {
      offer();
      return;
    }
    if (data.nonce !== nonce) return;
    if (data.type === "memory-layer:connect-key" && typeof data.key === "string") {
      done = true;
      let result = null;
      try {
        result = await chrome.runtime.sendMessage({ type: "connect-key", nonce, key: data.key });
      } catch {
        result = null;
      }
      post({ type: "memory-layer:connect-result", ok: Boolean(result && result.ok), message: result ? String(result.message) : "the extension did not take the key" });
    } else if (data.type === "memory-layer:connect-cancel") {
      done = true;
      chrome.runtime.sendMessage({ type: "connect-cancel", nonce }).catch(() => undefined);
    }
  });
  offer();
})();
