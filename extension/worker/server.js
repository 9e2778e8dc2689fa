/* The only code that talks to the Memory Layer server, and the only holder of its key. */

import { getSettings } from "./settings.js";

export class ServerError extends Error {
  constructor(status, message, retryAfterMs = 0) {
    super(message);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

function retryAfterMs(response) {
  const value = response.headers.get("Retry-After");
  if (!value) return 0;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : 0;
}

async function detail(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return response.statusText;
  }
}

export async function call(method, path, body, { timeoutMs = 15000, settings = null } = {}) {
  const { serverUrl, apiKey } = settings || (await getSettings());
  if (!serverUrl) throw new ServerError(0, "no server configured");
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(`${serverUrl}${path}`, {
      method,
      headers: {
        ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}),
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      signal: controller.signal,
    });
  } catch (error) {
    throw new ServerError(0, controller.signal.aborted ? "the server did not answer in time" : "cannot reach the server");
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) throw new ServerError(response.status, await detail(response), retryAfterMs(response));
  return response.json();
}

/* Who the key belongs to, when it says so (a JWT's subject); API keys do not. */
function subject(key) {
  const parts = key.split(".");
  if (parts.length !== 3) return "";
  try {
    const claims = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof claims.sub === "string" ? claims.sub : "";
  } catch {
    return "";
  }
}

/* Checks the URL and key with an authenticated read; a sentence for the person either way. */
export async function check(serverUrl, apiKey) {
  try {
    const page = await call("GET", "/memories?limit=1", undefined, { timeoutMs: 8000, settings: { serverUrl, apiKey } });
    const user = subject(apiKey) || (page.memories && page.memories[0] && page.memories[0].user_id) || "";
    return { ok: true, message: user ? `connected as ${user}` : "connected" };
  } catch (error) {
    if (error.status === 401) return { ok: false, message: "the server refused this key (401)" };
    if (error.status === 403) return { ok: false, message: "this key may not read memories (403)" };
    if (error.status) return { ok: false, message: `the server answered ${error.status}: ${error.message}` };
    return { ok: false, message: `${error.message} at ${serverUrl}` };
  }
}
