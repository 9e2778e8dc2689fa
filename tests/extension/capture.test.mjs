// The worker's pure logic: which site a sender is on, what a capture is, its parts and batches.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  FALLBACK_LIMITS,
  browserTimeZone,
  captureKey,
  itemsOf,
  jsonBytes,
  nextBatch,
  outcome,
  siteOf,
  splitText,
  validCapture,
} from "../../extension/worker/capture.js";

const LIMITS = { max_text_chars: 50000, max_field_chars: 512, max_batch_items: 256, max_batch_body_bytes: 4 * 1024 * 1024 };

const prompt = (n, text = `prompt ${n}`) => ({
  prompt: text,
  message_id: `claude:${n}`,
  conversation_id: "c-1",
  provider: "claude",
  url: "https://claude.ai/chat/c-1",
});
const record = (item, seq) => ({ seq, key: captureKey(item), item, at: 0, sent: 0 });

test("the site comes from the sender's URL, https and the known hosts only", () => {
  assert.equal(siteOf("https://claude.ai/chat/1"), "claude");
  assert.equal(siteOf("https://chat.openai.com/"), "chatgpt");
  assert.equal(siteOf("https://www.perplexity.ai"), "perplexity");
  assert.equal(siteOf("http://claude.ai/"), null);
  assert.equal(siteOf("https://claude.ai.example.org/"), null);
  assert.equal(siteOf("https://evil.example/claude.ai"), null);
  assert.equal(siteOf(undefined), null);
  assert.equal(siteOf("not a url"), null);
});

test("a capture keeps its own fields and takes the provider from the sender", () => {
  const raw = { ...prompt(1), provider: "chatgpt", user_id: "someone-else", extra: 1 };
  assert.deepEqual(validCapture(raw, "claude"), prompt(1));
  const answer = { response: "an answer", message_id: "m", response_message_id: "r", conversation_id: null, url: "u" };
  assert.deepEqual(validCapture(answer, "gemini"), { ...answer, provider: "gemini" });
});

test("a capture without its text or ids is not one", () => {
  assert.equal(validCapture(null, "claude"), null);
  assert.equal(validCapture({ ...prompt(1), prompt: "   " }, "claude"), null);
  assert.equal(validCapture({ ...prompt(1), message_id: "" }, "claude"), null);
  assert.equal(validCapture({ ...prompt(1), message_id: "x".repeat(257) }, "claude"), null);
  assert.equal(validCapture({ response: "a", message_id: "m", url: "u" }, "claude"), null);
  // Longer than the server takes is still a capture: it travels in parts.
  assert.ok(validCapture({ ...prompt(1), prompt: "x".repeat(120000) }, "claude"));
});

test("queue keys name the thing said: a prompt by its id, an answer by its own", () => {
  assert.equal(captureKey(prompt(7)), "prompt:claude:7");
  assert.equal(captureKey({ response: "a", message_id: "m", response_message_id: "r" }), "response:r");
});

test("a text within the limits is one part", () => {
  assert.deepEqual(splitText("short", 10), ["short"]);
});

test("a long text is cut at paragraphs and words, and the parts join to the text", () => {
  const paragraph = "word ".repeat(2000).trim();
  const text = Array.from({ length: 8 }, () => paragraph).join("\n\n");
  const parts = splitText(text, 25000);
  assert.equal(parts.join(""), text);
  assert.ok(parts.every((part) => part.length <= 25000));
  assert.ok(parts.slice(0, -1).every((part) => part.endsWith("\n\n")));
  const words = splitText("abc ".repeat(100), 50);
  assert.equal(words.join(""), "abc ".repeat(100));
  assert.ok(words.every((part) => part.length <= 50 && /^abc/.test(part)));
});

test("a cut never separates the halves of a surrogate pair, and bytes count too", () => {
  const text = "😀".repeat(30000);
  const parts = splitText(text, 50001, 100000);
  assert.equal(parts.join(""), text);
  for (const part of parts) {
    assert.ok(jsonBytes(part) <= 100000);
    assert.ok(!/^[\udc00-\udfff]/.test(part) && !/[\ud800-\udbff]$/.test(part));
  }
});

test("an answer over the limit becomes linked parts, the first sent last", () => {
  const response = "a".repeat(30000) + "\n\n" + "b".repeat(30000);
  const answer = { response, message_id: "p-1", response_message_id: "r-1", conversation_id: "c", provider: "claude", url: "u" };
  const items = itemsOf(answer, LIMITS, LIMITS.max_batch_body_bytes);
  assert.equal(items.length, 2);
  const [second, first] = items;
  assert.equal(first.response + second.response, response);
  assert.equal(first.response_message_id, "r-1");
  assert.equal(second.response_message_id, "r-1#part2");
  // Both answer the same prompt; the first part is the prompt's answer, being saved last.
  assert.equal(first.message_id, "p-1");
  assert.equal(second.message_id, "p-1");
  assert.deepEqual(first.metadata, { part: "1", parts: "2", part_of: "r-1" });
  assert.deepEqual(second.metadata, { part: "2", parts: "2", part_of: "r-1" });
});

test("a prompt over the limit keeps its id on the first part", () => {
  const items = itemsOf(prompt(1, "x ".repeat(40000)), LIMITS, LIMITS.max_batch_body_bytes);
  assert.deepEqual(items.map((item) => item.message_id), ["claude:1", "claude:1#part2"]);
  assert.ok(items.every((item) => item.prompt.length <= LIMITS.max_text_chars));
});

test("the time zone a capture was made in is sent in its metadata, on every part", () => {
  const [item] = itemsOf({ ...prompt(1), time_zone: "Europe/Berlin" }, LIMITS, 1e6);
  assert.deepEqual(item.metadata, { time_zone: "Europe/Berlin" });
  // Never as a field of its own: the server refuses fields it does not know.
  assert.equal("time_zone" in item, false);
  const parts = itemsOf({ ...prompt(2, "x ".repeat(40000)), time_zone: "Asia/Tokyo" }, LIMITS, LIMITS.max_batch_body_bytes);
  assert.deepEqual(
    parts.map((part) => part.metadata),
    [
      { time_zone: "Asia/Tokyo", part: "1", parts: "2", part_of: "claude:2" },
      { time_zone: "Asia/Tokyo", part: "2", parts: "2", part_of: "claude:2" },
    ],
  );
  const [plain] = itemsOf(prompt(3), LIMITS, 1e6);
  assert.equal("metadata" in plain, false);
});

test("the browser's time zone is its IANA name", () => {
  assert.equal(browserTimeZone(), Intl.DateTimeFormat().resolvedOptions().timeZone);
  assert.ok(browserTimeZone().length > 0);
});

test("a URL longer than a field holds is cut, the capture is not refused for it", () => {
  const [item] = itemsOf({ ...prompt(1), url: `https://claude.ai/${"q".repeat(2000)}` }, LIMITS, 1e6);
  assert.equal(item.url.length, 512);
});

test("batches stay under the body cap and the item count, in queue order", () => {
  const records = Array.from({ length: 40 }, (_, n) => record(prompt(n, `${n} ${"y".repeat(9000)}`), n + 1));
  const cap = 64 * 1024;
  const seen = [];
  let rest = records;
  while (rest.length) {
    const batch = nextBatch(rest, LIMITS, cap);
    assert.ok(batch.items.length > 0);
    assert.ok(jsonBytes({ items: batch.items }) <= cap, `${jsonBytes({ items: batch.items })} > ${cap}`);
    seen.push(...batch.items.map((item) => item.message_id));
    rest = rest.slice(batch.spans.length);
  }
  assert.deepEqual(seen, records.map((r) => r.item.message_id));
  const few = nextBatch(records, { ...LIMITS, max_batch_items: 3 }, cap);
  assert.equal(few.items.length, 3);
});

test("a capture bigger than one body goes in parts across batches", () => {
  const big = record(prompt(1, "z ".repeat(60000)), 1);
  const limits = { ...FALLBACK_LIMITS, max_text_chars: 50000 };
  const first = nextBatch([big], limits, 64 * 1024);
  assert.equal(first.spans[0].from, 0);
  assert.ok(first.spans[0].to < first.spans[0].total);
  const results = first.items.map(() => ({ status: "stored" }));
  const { done, progressed } = outcome(first, results);
  assert.deepEqual(done, []);
  assert.equal(progressed[0].sent, first.spans[0].to);
  const second = nextBatch([{ ...big, sent: progressed[0].sent }], limits, 64 * 1024);
  assert.equal(second.spans[0].from, first.spans[0].to);
});

test("only the server's word on an item settles it", () => {
  const records = [1, 2, 3, 4].map((n) => record(prompt(n), n));
  const batch = nextBatch(records, LIMITS, 1e6);
  const settled = outcome(batch, [
    { status: "stored", id: "a" },
    { status: "already_present", id: "b" },
    { status: "refused", reason: "prompt: must not be empty" },
    // No result for the fourth: it stays queued.
  ]);
  assert.deepEqual(settled.done.map((r) => r.seq), [1, 2]);
  assert.deepEqual(settled.refused, [{ record: records[2], reason: "prompt: must not be empty" }]);
  assert.deepEqual(settled.progressed, []);
  const nothing = outcome(batch, []);
  assert.deepEqual([nothing.done, nothing.refused, nothing.progressed], [[], [], []]);
});
