// @ts-check
/*
 * What a capture is and how it travels, with no browser API in sight (unit-tested with
 * `node --test`): the site a sender's URL belongs to, a capture's checks and queue key, a text
 * over the server's limit cut into linked parts, and the queue's head cut into batches that
 * stay under the server's body cap.
 */

/** @typedef {import("./messages.js").SiteId} SiteId */
/** @typedef {import("./messages.js").Capture} Capture */
/** @typedef {import("./messages.js").QueuedCapture} QueuedCapture */

/**
 * What the server takes (GET /limits answers these fields).
 * @typedef {object} Limits
 * @property {number} max_text_chars
 * @property {number} max_field_chars
 * @property {number} max_batch_items
 * @property {number} max_batch_body_bytes
 */

/**
 * A queued capture: `seq` orders the queue, `sent` counts its leading items the server has
 * acknowledged (a capture cut into more parts than one batch holds).
 * @typedef {{ seq?: number, key: string, item: QueuedCapture, at: number, sent: number }} QueueRecord
 */

/** @type {Readonly<Record<string, SiteId>>} */
export const SITE_HOSTS = Object.freeze({
  "chatgpt.com": "chatgpt",
  "chat.openai.com": "chatgpt",
  "claude.ai": "claude",
  "gemini.google.com": "gemini",
  "www.perplexity.ai": "perplexity",
});

/**
 * Used only until a server states its own limits (older servers do not): what every server
 * of this version takes, with a smaller body than its cap so a proxy's default passes too.
 * @type {Readonly<Limits>}
 */
export const FALLBACK_LIMITS = Object.freeze({
  max_text_chars: 50000,
  max_field_chars: 512,
  max_batch_items: 100,
  max_batch_body_bytes: 1024 * 1024,
});

// A capture is kept whatever its length up to this (a page can forge captures; a person's
// message is far shorter); ids are the extension's or the site's, never long.
export const MAX_CAPTURE_CHARS = 2000000;
const MAX_ID_CHARS = 256;
const MAX_URL_CHARS = 8192;
// The server's limit on a time zone name.
const MAX_TIME_ZONE_CHARS = 64;
// `{"items":[` and `]}`, and room for what JSON.stringify and the server count differently.
const BODY_OVERHEAD_BYTES = 64;

const encoder = new TextEncoder();

/** Bytes of a value as JSON in UTF-8, as it goes on the wire. */
export function jsonBytes(/** @type {unknown} */ value) {
  return encoder.encode(JSON.stringify(value)).length;
}

/** The site of a sender's URL (the browser's word), or null for any other page. */
export function siteOf(/** @type {string | undefined} */ url) {
  if (!url) return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" ? SITE_HOSTS[parsed.hostname] || null : null;
  } catch {
    return null;
  }
}

const isText = (/** @type {unknown} */ value, /** @type {number} */ max) =>
  typeof value === "string" && value.trim().length > 0 && value.length <= max;
const isOptional = (/** @type {unknown} */ value, /** @type {number} */ max) =>
  value === null || value === undefined || (typeof value === "string" && value.length <= max);

/**
 * The capture's own fields, with the provider the sender's URL says; null when it is not one.
 * @param {unknown} raw
 * @param {SiteId} site
 * @returns {QueuedCapture | null}
 */
export function validCapture(raw, site) {
  if (!raw || typeof raw !== "object") return null;
  const item = /** @type {Record<string, unknown>} */ (raw);
  if (!isOptional(item.conversation_id, MAX_ID_CHARS) || !isOptional(item.url, MAX_URL_CHARS)) return null;
  if (!isText(item.message_id, MAX_ID_CHARS)) return null;
  const conversation_id = /** @type {string | null} */ (item.conversation_id ?? null);
  const url = /** @type {string} */ (item.url ?? "");
  const message_id = /** @type {string} */ (item.message_id);
  if ("response" in item) {
    if (!isText(item.response, MAX_CAPTURE_CHARS) || !isText(item.response_message_id, MAX_ID_CHARS)) return null;
    const response = /** @type {string} */ (item.response);
    const response_message_id = /** @type {string} */ (item.response_message_id);
    return { response, message_id, response_message_id, conversation_id, provider: site, url };
  }
  if (!isText(item.prompt, MAX_CAPTURE_CHARS)) return null;
  return { prompt: /** @type {string} */ (item.prompt), message_id, conversation_id, provider: site, url };
}

/** The browser's IANA time zone ("Europe/Berlin"), or "" when it does not say one. */
export function browserTimeZone() {
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return typeof zone === "string" && zone.length <= MAX_TIME_ZONE_CHARS ? zone : "";
  } catch {
    return "";
  }
}

/** One key per thing said: a resend of the same capture is the same key. */
export function captureKey(/** @type {Capture} */ item) {
  return "response" in item ? `response:${item.response_message_id}` : `prompt:${item.message_id}`;
}

const SEPARATORS = ["\n\n", "\n", ". ", " "];

/** Where to end a part at most `end` long: after a paragraph, line, sentence or word in its
 * last fifth, and never between the halves of a surrogate pair. */
function cut(/** @type {string} */ text, /** @type {number} */ end) {
  if (end >= text.length) return text.length;
  const floor = Math.floor(end * 0.8);
  for (const separator of SEPARATORS) {
    const at = text.lastIndexOf(separator, end - separator.length);
    if (at >= floor && at > 0) return at + separator.length;
  }
  const code = text.charCodeAt(end - 1);
  return code >= 0xd800 && code <= 0xdbff ? end - 1 : end;
}

/**
 * The text in parts of at most maxChars characters and maxBytes bytes as JSON, cut at natural
 * boundaries; the parts joined are the text.
 * @param {string} text
 * @param {number} maxChars
 * @param {number} [maxBytes]
 * @returns {string[]}
 */
export function splitText(text, maxChars, maxBytes = Infinity) {
  const fits = (/** @type {string} */ part) => part.length <= maxChars && (maxBytes === Infinity || jsonBytes(part) <= maxBytes);
  const parts = [];
  let rest = text;
  while (rest) {
    if (fits(rest)) {
      parts.push(rest);
      break;
    }
    let end = Math.min(rest.length, maxChars);
    while (end > 1 && !fits(rest.slice(0, end))) end = Math.floor(end * 0.9);
    end = Math.max(1, cut(rest, end));
    parts.push(rest.slice(0, end));
    rest = rest.slice(end);
  }
  return parts;
}

/**
 * What goes to POST /memories/batch for one capture: itself, or its parts when its text is
 * longer than the server takes. Parts carry `part`, `parts` and `part_of` in their metadata; a
 * prompt's first part keeps the capture's message id (its answer names it) and an answer's
 * parts all name the prompt, the first part last so that the prompt's answer is the first
 * part. The time zone the capture was made in goes in the metadata as `time_zone`. The URL is
 * cut to what a field may hold.
 * @param {QueuedCapture} capture
 * @param {Limits} limits
 * @param {number} maxItemBytes
 * @returns {object[]}
 */
export function itemsOf(capture, limits, maxItemBytes) {
  const { time_zone: timeZone, ...fields } = capture;
  const zone = timeZone ? { time_zone: timeZone } : {};
  const base = { ...fields, url: (fields.url || "").slice(0, limits.max_field_chars) || null };
  const isResponse = "response" in capture;
  const field = isResponse ? "response" : "prompt";
  const text = isResponse ? capture.response : capture.prompt;
  const ownId = isResponse ? capture.response_message_id : capture.message_id;
  const overhead = jsonBytes({ ...base, [field]: "", metadata: { ...zone, part: "0000", parts: "0000", part_of: ownId } });
  const parts = splitText(text, limits.max_text_chars, Math.max(1024, maxItemBytes - overhead));
  if (parts.length === 1) return [timeZone ? { ...base, [field]: text, metadata: zone } : { ...base, [field]: text }];
  const items = parts.map((part, i) => {
    const item = { ...base, [field]: part, metadata: { ...zone, part: String(i + 1), parts: String(parts.length), part_of: ownId } };
    if (i === 0) return item;
    return isResponse
      ? { ...item, response_message_id: `${ownId}#part${i + 1}` }
      : { ...item, message_id: `${ownId}#part${i + 1}` };
  });
  return isResponse ? [...items.slice(1), items[0]] : items;
}

/**
 * @typedef {object} Batch
 * @property {object[]} items
 * @property {number} bytes   of the request body
 * @property {Array<{ record: QueueRecord, from: number, to: number, total: number }>} spans
 *   which items of which record: record's items [from, to) of total are items[offset...]
 */

/**
 * The first batch from the queue's head: whole records in order while they fit in
 * max_batch_items and bodyBytes, cutting a record only when it is first and alone too big.
 * @param {QueueRecord[]} records   the queue's head, oldest first
 * @param {Limits} limits
 * @param {number} bodyBytes   the largest body to send
 * @returns {Batch}
 */
export function nextBatch(records, limits, bodyBytes) {
  /** @type {Batch} */
  const batch = { items: [], bytes: BODY_OVERHEAD_BYTES, spans: [] };
  const maxItemBytes = bodyBytes - BODY_OVERHEAD_BYTES;
  for (const record of records) {
    const all = itemsOf(record.item, limits, maxItemBytes);
    const from = Math.min(record.sent || 0, all.length - 1);
    let to = from;
    for (; to < all.length; to += 1) {
      const size = jsonBytes(all[to]) + 1;
      const full = batch.items.length >= limits.max_batch_items || batch.bytes + size > bodyBytes;
      if (full && batch.items.length) break;
      batch.items.push(all[to]);
      batch.bytes += size;
    }
    if (to > from) batch.spans.push({ record, from, to, total: all.length });
    if (to < all.length) break;
  }
  return batch;
}

/**
 * What the server's results say about each record of a batch: done (every item stored or
 * already present), refused (an item refused, with its reason), or sent further (acknowledged
 * items so far; the rest wait).
 * @param {Batch} batch
 * @param {Array<{ status?: string, reason?: string } | null | undefined>} results
 */
export function outcome(batch, results) {
  /** @type {QueueRecord[]} */
  const done = [];
  /** @type {Array<{ record: QueueRecord, reason: string }>} */
  const refused = [];
  /** @type {Array<{ record: QueueRecord, sent: number }>} */
  const progressed = [];
  let offset = 0;
  for (const span of batch.spans) {
    const own = results.slice(offset, offset + (span.to - span.from));
    offset += span.to - span.from;
    const problem = own.find((result) => result && result.status === "refused");
    if (problem) {
      const part = span.total > 1 ? ` (part ${span.from + own.indexOf(problem) + 1} of ${span.total})` : "";
      refused.push({ record: span.record, reason: `${problem.reason || "refused"}${part}` });
      continue;
    }
    let acknowledged = 0;
    while (
      acknowledged < own.length &&
      own[acknowledged] &&
      ["stored", "already_present"].includes(/** @type {string} */ (own[acknowledged]?.status))
    ) {
      acknowledged += 1;
    }
    const sent = span.from + acknowledged;
    if (sent >= span.total) done.push(span.record);
    else if (sent > (span.record.sent || 0)) progressed.push({ record: span.record, sent });
  }
  return { done, refused, progressed };
}
