// @ts-check
/*
 * Captures waiting for the server. A capture leaves the queue only when the server has stored
 * it, said it is already present, or refused that item with its own reason (kept apart, for
 * the person to see and export). An answer about the whole request (no network, 4xx, 5xx)
 * never deletes anything: 413 makes the requests smaller, anything else is waited out with
 * backoff and, when it is the address or the key, shown as a connection problem. Message ids
 * make a resend harmless, so every capture is stored exactly once.
 */

import { FALLBACK_LIMITS, captureKey, nextBatch, outcome } from "./capture.js";
import { call } from "./server.js";
import { getSettings } from "./settings.js";
import * as store from "./store.js";

/** @typedef {import("./capture.js").Limits} Limits */
/** @typedef {import("./messages.js").QueuedCapture} QueuedCapture */

export const MAX_QUEUE = 5000;
export const BATCH_PATH = "/memories/batch";
const REMEMBERED = 2000;
const MAX_BACKOFF_MS = 30000;
// A stopped worker is woken by an alarm; Chrome runs them at most every 30 s.
const ALARM_MS = 30000;
// A 413 halves the body; below this a request is not the problem.
const MIN_BODY_BYTES = 16 * 1024;
const LIMITS_TTL_MS = 10 * 60000;
// The head of the queue read for one batch; no server takes more items at once.
const HEAD = 256;

/** @type {number | null} */
let queued = null;
/** @type {Promise<void> | null} */
let flushing = null;
// A flush asked for while one runs: that one may have looked at the queue already.
let again = false;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let timer;
/** @type {{ limits: Limits, at: number, server: string } | null} */
let stated = null;

async function queuedCount() {
  if (queued === null) queued = await store.count("queue");
  return queued;
}

/** The server's limits (GET /limits), asked again every few minutes. */
async function serverLimits(/** @type {string} */ serverUrl) {
  if (stated && stated.server === serverUrl && Date.now() - stated.at < LIMITS_TTL_MS) return stated.limits;
  try {
    const answer = await call("GET", "/limits", undefined, { timeoutMs: 8000 });
    /** @type {Limits} */
    const limits = { ...FALLBACK_LIMITS };
    for (const name of /** @type {(keyof Limits)[]} */ (Object.keys(FALLBACK_LIMITS))) {
      if (Number.isInteger(answer[name]) && answer[name] > 0) limits[name] = answer[name];
    }
    stated = { limits, at: Date.now(), server: serverUrl };
    return limits;
  } catch {
    // An older server, or one not reachable yet: the batch will say which.
    return FALLBACK_LIMITS;
  }
}

/** Queues a capture, one write; false when it is queued or delivered already. */
export async function enqueue(/** @type {QueuedCapture} */ item) {
  const added = await store.add({ key: captureKey(item), item, at: Date.now(), sent: 0 });
  if (!added) return false;
  if (queued === null) await queuedCount();
  else queued += 1;
  let dropped = 0;
  while ((queued ?? 0) > MAX_QUEUE && (await store.dropOldest())) {
    queued = (queued ?? 1) - 1;
    dropped += 1;
  }
  if (dropped) {
    const state = await chrome.storage.local.get("dropped");
    await chrome.storage.local.set({ dropped: (state.dropped || 0) + dropped });
  }
  return true;
}

function schedule(/** @type {number} */ delayMs) {
  clearTimeout(timer);
  timer = setTimeout(() => flush(), delayMs);
  chrome.alarms.create("flush", { when: Date.now() + Math.max(delayMs, ALARM_MS) });
}

function backoffMs(/** @type {number} */ failures) {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (0.8 + 0.4 * Math.random()));
}

/** The sentence the popup shows for a whole request's failure; "" when it is only waiting. */
function problem(/** @type {any} */ error, /** @type {string} */ serverUrl) {
  if ([400, 404, 405, 422].includes(error.status)) {
    return `the server at ${serverUrl} answers ${error.status} for ${BATCH_PATH} — is the URL right?`;
  }
  if (error.status === 401) return "the server refused this key (401)";
  if (error.status === 403) return `this key may not save memories (403: ${error.message})`;
  if (error.status === 413) return `the server at ${serverUrl} refuses even small requests (413)`;
  if (!error.status) return `${error.message} at ${serverUrl}`;
  return "";
}

async function fail(/** @type {any} */ error, /** @type {string} */ serverUrl) {
  const { retry } = await chrome.storage.local.get("retry");
  const failures = ((retry && retry.failures) || 0) + 1;
  const delay = Math.max(backoffMs(failures), error.retryAfterMs || 0);
  const lastError = error.status ? `server answered ${error.status}: ${error.message}` : error.message;
  /** @type {Record<string, unknown>} */
  const values = { retry: { failures, nextAt: Date.now() + delay, lastError } };
  const message = problem(error, serverUrl);
  if (message) values.connection = { ok: false, message, at: Date.now() };
  await chrome.storage.local.set(values);
  schedule(delay);
}

async function succeeded(/** @type {number} */ refusedNow) {
  const { retry, connection } = await chrome.storage.local.get(["retry", "connection"]);
  /** @type {Record<string, unknown>} */
  const values = {};
  if (!retry || retry.failures || retry.nextAt) values.retry = { failures: 0, nextAt: 0, lastError: "" };
  if (!connection || !connection.ok) values.connection = { ok: true, message: "connected", at: Date.now() };
  if (refusedNow) values.retry = { failures: 0, nextAt: 0, lastError: "" };
  if (Object.keys(values).length) await chrome.storage.local.set(values);
}

async function drain() {
  const settings = await getSettings();
  const serverUrl = settings.serverUrl;
  if (!serverUrl) return;
  let sinceForget = 0;
  for (;;) {
    const { retry, bodyBytes } = await chrome.storage.local.get(["retry", "bodyBytes"]);
    const wait = ((retry && retry.nextAt) || 0) - Date.now();
    if (wait > 0) {
      schedule(wait);
      return;
    }
    const records = await store.head(HEAD);
    if (!records.length) {
      // Counted again at the next capture, in case one came while this looked.
      queued = null;
      return;
    }
    const limits = await serverLimits(serverUrl);
    const cap = Math.min(limits.max_batch_body_bytes, bodyBytes || Infinity);
    const batch = nextBatch(records, limits, cap);
    let answer;
    try {
      answer = await call("POST", BATCH_PATH, { items: batch.items }, { timeoutMs: 60000, settings });
    } catch (error) {
      const failure = /** @type {any} */ (error);
      if (failure.status === 413 && batch.bytes / 2 >= MIN_BODY_BYTES) {
        // The server (or a proxy in front of it) takes less than it said: ask with half.
        await chrome.storage.local.set({ bodyBytes: Math.floor(batch.bytes / 2) });
        continue;
      }
      await fail(failure, serverUrl);
      return;
    }
    const settled = outcome(batch, Array.isArray(answer.results) ? answer.results : []);
    await store.settle(settled);
    if (queued !== null) queued = Math.max(0, queued - settled.done.length - settled.refused.length);
    await succeeded(settled.refused.length);
    sinceForget += settled.done.length;
    if (sinceForget >= 200) {
      sinceForget = 0;
      await store.forgetDelivered(REMEMBERED);
    }
    if (!settled.done.length && !settled.refused.length && !settled.progressed.length) {
      // An answer that acknowledged nothing: wait as for a failure rather than loop.
      await fail({ status: 0, message: "the server acknowledged none of the batch" }, serverUrl);
      return;
    }
  }
}

/** Sends what is queued, unless a retry is not due yet; one flush at a time. */
export function flush() {
  if (flushing) {
    again = true;
    return flushing;
  }
  flushing = drain()
    .catch((error) => console.warn("memory layer: flush", error))
    .finally(() => {
      flushing = null;
      if (again) {
        again = false;
        flush();
      }
    });
  return flushing;
}

/** A new server or key: what was learnt about the old one no longer holds. */
export async function reset() {
  stated = null;
  await chrome.storage.local.set({ retry: { failures: 0, nextAt: 0, lastError: "" } });
  await chrome.storage.local.remove("bodyBytes");
}

export async function queueStatus() {
  const { retry, dropped } = await chrome.storage.local.get(["retry", "dropped"]);
  const refused = await store.refusedItems();
  return {
    length: await store.count("queue"),
    max: MAX_QUEUE,
    dropped: dropped || 0,
    refused: refused.length,
    refusedReasons: refused.slice(-5).map(({ reason }) => reason),
    lastError: (retry && retry.lastError) || "",
    nextAttemptAt: (retry && retry.nextAt) || 0,
  };
}

/** The refused captures with their reasons, for the person to keep. */
export const refusedCaptures = () => store.refusedItems();
export const clearRefused = () => store.clearRefused();
