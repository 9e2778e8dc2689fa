// The adapters' parsing: conversation ids and private chats from the URL, and turns read
// through the shared helper from each adapter's selectors. The content scripts are loaded as
// the manifest loads them, into a context with a small document that answers the selectors.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

const root = new URL("../../extension/", import.meta.url);
const manifest = JSON.parse(readFileSync(new URL("manifest.json", root), "utf8"));
const scripts = manifest.content_scripts[0].js.filter((path) => path.includes("registry") || path.includes("adapters/"));

/* An element that matches the selectors it is given, holding children found by selector. */
function element(matches, { text = "", attributes = {}, inside = {} } = {}) {
  return {
    matches: (selector) => matches.includes(selector),
    querySelector: (selector) => inside[selector] || null,
    getAttribute: (name) => attributes[name] ?? null,
    innerText: text,
  };
}

/* The adapters registered with a document whose querySelectorAll(selector) answers turns. */
function load(turnsFor) {
  const document = {
    querySelector: () => null,
    querySelectorAll: (selector) => turnsFor(selector),
  };
  const context = vm.createContext({ document, URLSearchParams, Array });
  context.globalThis = context;
  for (const path of scripts) vm.runInContext(readFileSync(new URL(path, root), "utf8"), context, { filename: path });
  return context.MemoryLayer;
}

const at = (url) => new URL(url);

test("each site's adapter is found by its hosts", () => {
  const ML = load(() => []);
  assert.deepEqual(
    ["chatgpt.com", "chat.openai.com", "claude.ai", "gemini.google.com", "www.perplexity.ai", "example.org"].map(
      (host) => ML.forHost(host)?.id ?? null,
    ),
    ["chatgpt", "chatgpt", "claude", "gemini", "perplexity", null],
  );
});

test("conversation ids and private chats come from the URL", () => {
  const ML = load(() => []);
  const site = (id) => ML.adapters.find((adapter) => adapter.id === id);
  assert.equal(site("chatgpt").conversationId(at("https://chatgpt.com/c/6750a1b2-0000-1111")), "6750a1b2-0000-1111");
  assert.equal(site("chatgpt").conversationId(at("https://chatgpt.com/g/g-abc/c/6750a1b2-aa")), "6750a1b2-aa");
  assert.equal(site("chatgpt").conversationId(at("https://chatgpt.com/")), null);
  assert.equal(site("chatgpt").isPrivate(at("https://chatgpt.com/?temporary-chat=true")), true);
  assert.equal(site("claude").conversationId(at("https://claude.ai/chat/0f1e2d3c-4b5a")), "0f1e2d3c-4b5a");
  assert.equal(site("claude").isPrivate(at("https://claude.ai/new?incognito")), true);
  assert.equal(site("claude").isPrivate(at("https://claude.ai/new")), false);
  assert.equal(site("gemini").conversationId(at("https://gemini.google.com/u/1/app/abcdef0123")), "abcdef0123");
  assert.equal(site("gemini").conversationId(at("https://gemini.google.com/app")), null);
  assert.equal(site("perplexity").conversationId(at("https://www.perplexity.ai/search/dog-food-1a2b")), "dog-food-1a2b");
});

test("ChatGPT's turns carry the site's ids and their bodies' text", () => {
  const user = '[data-message-author-role="user"][data-message-id]';
  const assistant = '[data-message-author-role="assistant"][data-message-id]';
  const turns = [
    element([user], { attributes: { "data-message-id": "u-1" }, inside: { ".whitespace-pre-wrap": element([], { text: " What is a roux? " }) } }),
    element([assistant], { text: "Copy\nA roux is…", attributes: { "data-message-id": "a-1" }, inside: { ".markdown": element([], { text: "A roux is…" }) } }),
  ];
  const ML = load((selector) => (selector === `${user}, ${assistant}` ? turns : []));
  const chatgpt = ML.adapters.find((adapter) => adapter.id === "chatgpt");
  assert.deepEqual(
    chatgpt.turns().map(({ role, id, text }) => ({ role, id, text })),
    [
      { role: "user", id: "u-1", text: "What is a roux?" },
      { role: "assistant", id: "a-1", text: "A roux is…" },
    ],
  );
});

test("Gemini's answer text is the markdown when there is one, the message content otherwise", () => {
  const content = element([], { text: "plain answer" });
  const turns = [
    element(["user-query"], { text: "edit\nquestion", inside: { ".query-text": element([], { text: "question" }) } }),
    element(["model-response"], { inside: { "message-content .markdown": element([], { text: "rich answer" }) } }),
    element(["model-response"], { inside: { "message-content": content } }),
  ];
  const ML = load((selector) => (selector === "user-query, model-response" ? turns : []));
  const gemini = ML.adapters.find((adapter) => adapter.id === "gemini");
  assert.deepEqual(
    gemini.turns().map(({ role, id, text }) => [role, id, text]),
    [
      ["user", null, "question"],
      ["assistant", null, "rich answer"],
      ["assistant", null, "plain answer"],
    ],
  );
});

test("Claude and Perplexity read the user turn itself and the answer's prose", () => {
  for (const [id, user, assistant, prose] of [
    ["claude", '[data-testid="user-message"]', ".font-claude-response", ".standard-markdown"],
    ["perplexity", 'div[class~="group/query"]', 'div[id^="markdown-content-"]', ".prose"],
  ]) {
    const turns = [
      element([user], { text: "a\u00a0question" }),
      element([assistant], { text: "chrome around it", inside: { [prose]: element([], { text: "the answer" }) } }),
    ];
    const ML = load((selector) => (selector === `${user}, ${assistant}` ? turns : []));
    const adapter = ML.adapters.find((candidate) => candidate.id === id);
    assert.deepEqual(
      adapter.turns().map(({ role, text }) => [role, text]),
      [
        ["user", "a question"],
        ["assistant", "the answer"],
      ],
      id,
    );
  }
});
