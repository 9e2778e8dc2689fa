/*
 * Captures waiting for the server, in chrome.storage.local so that they outlive the worker
 * being stopped and the browser restarting. An item leaves the queue only once the server has
 * acknowledged it; its message id makes a resend after a lost acknowledgement harmless, so
 * every capture is stored exactly once.
 */

import { call } from "./server.js";

export const MAX_QUEUE = 5000;
const BATCH = 100;
const REMEMBERED = 2000;
const MAX_BACKOFF_MS = 30000;
// A stopped worker is woken by an alarm; Chrome runs them at most every 30 s.
const ALARM_MS = 30000;

let chain = Promise.resolve();
let flushing = null;
let timer = 0;

/* Every read-modify-write of the queue runs alone. */
function serial(task) {
  const run = chain.then(task, task);
  chain = run.catch(() => undefined);
  return run;
}

async function load() {
  const state = await chrome.storage.local.get(["queue", "delivered", "retry", "dropped", "refused"]);
  return {
    queue: state.queue || [],
    delivered: state.delivered || [],
    retry: state.retry || { failures: 0, nextAt: 0, lastError: "" },
    dropped: state.dropped || 0,
    refused: state.refused || 0,
  };
}

export function keyOf(item) {
  return "response" in item ? `response:${item.response_message_id}` : `prompt:${item.message_id}`;
}

export function enqueue(item) {
  return serial(async () => {
    const state = await load();
    const key = keyOf(item);
    if (state.delivered.includes(key) || state.queue.some((entry) => entry.key === key)) return false;
    state.queue.push({ key, item, at: Date.now() });
    let { dropped } = state;
    while (state.queue.length > MAX_QUEUE) {
      state.queue.shift();
      dropped += 1;
    }
    await chrome.storage.local.set({ queue: state.queue, dropped });
    return true;
  });
}

function schedule(delayMs) {
  clearTimeout(timer);
  timer = setTimeout(() => flush(), delayMs);
  chrome.alarms.create("flush", { when: Date.now() + Math.max(delayMs, ALARM_MS) });
}

function backoffMs(failures) {
  const base = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (0.8 + 0.4 * Math.random()));
}

async function acknowledge(sent, results) {
  await serial(async () => {
    const state = await load();
    const keys = new Set(sent.map((entry) => entry.key));
    const refusedReasons = [];
    results.forEach((result, i) => {
      if (result && result.status === "refused") refusedReasons.push(`${sent[i].key}: ${result.reason}`);
    });
    const delivered = state.delivered.concat([...keys]).slice(-REMEMBERED);
    await chrome.storage.local.set({
      queue: state.queue.filter((entry) => !keys.has(entry.key)),
      delivered,
      refused: state.refused + refusedReasons.length,
      retry: { failures: 0, nextAt: 0, lastError: refusedReasons.length ? `refused ${refusedReasons[0]}` : "" },
      connection: { ok: true, at: Date.now() },
    });
  });
}

async function fail(error) {
  await serial(async () => {
    const state = await load();
    const failures = state.retry.failures + 1;
    const delay = Math.max(backoffMs(failures), error.retryAfterMs || 0);
    const lastError = error.status ? `server answered ${error.status}: ${error.message}` : error.message;
    const values = { retry: { failures, nextAt: Date.now() + delay, lastError } };
    if (error.status === 401 || error.status === 403 || !error.status) {
      values.connection = { ok: false, message: lastError, at: Date.now() };
    }
    await chrome.storage.local.set(values);
    schedule(delay);
  });
}

/* A batch the server will never take (malformed as a whole) is set aside, not retried forever. */
async function setAside(sent, error) {
  await serial(async () => {
    const state = await load();
    const keys = new Set(sent.map((entry) => entry.key));
    await chrome.storage.local.set({
      queue: state.queue.filter((entry) => !keys.has(entry.key)),
      refused: state.refused + keys.size,
      retry: { failures: 0, nextAt: 0, lastError: `refused ${error.status}: ${error.message}` },
    });
  });
}

async function drain() {
  for (;;) {
    const state = await load();
    if (!state.queue.length) return;
    const wait = state.retry.nextAt - Date.now();
    if (wait > 0) {
      schedule(wait);
      return;
    }
    const sent = state.queue.slice(0, BATCH);
    try {
      const answer = await call("POST", "/memories/batch", { items: sent.map((entry) => entry.item) });
      await acknowledge(sent, answer.results || []);
    } catch (error) {
      if ([400, 404, 413, 422].includes(error.status)) {
        await setAside(sent, error);
      } else {
        await fail(error);
        return;
      }
    }
  }
}

/* Sends what is queued, unless a retry is not due yet; one flush at a time. */
export function flush() {
  if (!flushing) flushing = drain().finally(() => (flushing = null));
  return flushing;
}

export async function queueStatus() {
  const state = await load();
  return {
    length: state.queue.length,
    max: MAX_QUEUE,
    dropped: state.dropped,
    refused: state.refused,
    lastError: state.retry.lastError,
    nextAttemptAt: state.retry.nextAt,
  };
}
