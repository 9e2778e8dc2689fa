// @ts-check
/*
 * What every site shares: noticing a submit, injecting memories (auto / suggest / off),
 * capturing the prompt as typed and the answer once it has finished, and reporting whether
 * the page still looks like the site the adapter knows. Everything site-specific comes from
 * the adapter; the server is reached only through the service worker, which holds the key.
 *
 * Fail open: any error here leaves the person's message going out as typed. Only a person
 * drives it: submits, typing, the shortcut and the chip count only as trusted events, so a
 * page's own scripts cannot make it fetch or insert memories.
 *
 * A capture's message id is fixed when its submit is seen (random, or the site's own id where
 * the page shows one), never derived from the turn's place on the page: sites render only the
 * latest turns of a long thread after a reload, and re-render them at will.
 */
(() => {
  "use strict";
  /** @typedef {import("../worker/messages.js").ContentMessage} ContentMessage */
  /** @typedef {import("../worker/messages.js").SiteSettings} SiteSettings */
  /** @typedef {import("../worker/messages.js").ContextAnswer} ContextAnswer */
  /** @type {any} */
  const ML = /** @type {any} */ (globalThis).MemoryLayer;
  const adapter = ML.forHost(location.hostname);
  if (!adapter || ML.started) return;
  ML.started = true;

  const EDITOR_GRACE_MS = 5000;
  const TURN_GRACE_MS = 10000;
  const PENDING_MS = 60000;
  const STABLE_MS = 700;
  const ANSWER_GIVE_UP_MS = 15 * 60000;
  const CONVERSATION_WAIT_MS = 5000;
  const SUGGEST_DEBOUNCE_MS = 600;
  const SUGGEST_MIN_CHARS = 8;
  // Typing counts as the person's for this long after their last key, paste or drop.
  const TYPING_MS = 2000;

  const startedAt = Date.now();
  /** @type {SiteSettings} */
  let settings = { capture: false, inject: "off", paused: true, budgetMs: 800 };
  let health = "unknown";
  let awaitingTurnSince = 0;
  let lastSubmit = { typed: "", at: 0 };
  let personTypedAt = 0;
  /** @type {{ block: string } | null} */
  let suggested = null;
  let bypass = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let suggestTimer;
  /** @type {Array<{ typed: string, at: number, id: string }>} */
  const pending = [];
  /** @type {any[]} */
  const tracked = [];
  // User turns already accounted for: on the page at load, captured, or rendered again.
  /** @type {WeakSet<Element>} */
  const seen = new WeakSet();

  /** @param {ContentMessage} message */
  async function send(message) {
    try {
      return await chrome.runtime.sendMessage(message);
    } catch {
      return null;
    }
  }

  async function refreshSettings() {
    const answer = await send({ type: "hello" });
    if (answer && typeof answer === "object") settings = answer;
  }

  const active = () => !settings.paused && health === "ok" && !adapter.isPrivate(location);
  const capturing = () => active() && settings.capture;
  const injecting = (mode) => active() && settings.inject === mode;

  function typedText(editor) {
    return ML.editing.strip(ML.text(editor), suggested && suggested.block);
  }

  /* ---- health ---- */

  function checkHealth() {
    const now = Date.now();
    let state = "ok";
    let reason = "";
    if (!adapter.editor()) {
      state = now - startedAt < EDITOR_GRACE_MS ? "unknown" : "broken";
      reason = "editor not found";
    } else if (awaitingTurnSince && now - awaitingTurnSince > TURN_GRACE_MS) {
      state = "broken";
      reason = "sent messages not found";
    }
    if (state !== health) {
      health = state;
      if (state !== "unknown") send({ type: "health", ok: state === "ok", reason });
      if (state !== "ok") ML.chip.hide();
    }
  }

  /* ---- capture ---- */

  function userTurns() {
    return adapter.turns().filter((turn) => turn.role === "user");
  }

  const squeeze = (/** @type {string} */ text) => text.replace(/\s+/g, " ").trim();
  /* Whether a turn shows what was typed (memories the extension inserted come before it). */
  const shows = (/** @type {string} */ text, /** @type {string} */ typed) => squeeze(text).includes(squeeze(typed));

  function noteSubmit(/** @type {string} */ typed) {
    const now = Date.now();
    // Enter and a click on send can both fire for one message.
    if (typed === lastSubmit.typed && now - lastSubmit.at < 2000) return;
    lastSubmit = { typed, at: now };
    pending.push({ typed, at: now, id: `${adapter.id}:${crypto.randomUUID()}` });
    if (!awaitingTurnSince) awaitingTurnSince = now;
  }

  /* New user turns, newest first, each claiming the submit whose text it shows (or, the
   * newest turn, the oldest submit waiting); a turn that claims none was rendered from
   * history and is never captured. */
  function findNewTurns() {
    const now = Date.now();
    while (pending.length && now - pending[0].at > PENDING_MS) pending.shift();
    if (!pending.length) awaitingTurnSince = 0;
    const users = userTurns();
    for (let i = users.length - 1; i >= 0; i -= 1) {
      const turn = users[i];
      if (seen.has(turn.element)) continue;
      seen.add(turn.element);
      let claimed = pending.findIndex((submit) => shows(turn.text, submit.typed));
      if (claimed < 0 && i === users.length - 1 && pending.length) claimed = 0;
      if (claimed < 0) continue;
      const [submit] = pending.splice(claimed, 1);
      awaitingTurnSince = 0;
      if (!capturing()) continue;
      tracked.push({ stage: "prompt", at: submit.at, typed: submit.typed, messageId: turn.id || submit.id, element: turn.element });
    }
  }

  /* The record's answer: the last assistant turn after its user turn, found again by its text
   * when the site has rendered the thread anew. */
  function locate(/** @type {any} */ record) {
    const turns = adapter.turns();
    let position = turns.findIndex((/** @type {any} */ turn) => turn.element === record.element);
    if (position < 0) {
      for (let i = turns.length - 1; i >= 0 && position < 0; i -= 1) {
        if (turns[i].role === "user" && shows(turns[i].text, record.typed)) position = i;
      }
      if (position < 0) return { answer: null };
      record.element = turns[position].element;
      seen.add(record.element);
    }
    let answer = null;
    for (let i = position + 1; i < turns.length && turns[i].role === "assistant"; i += 1) answer = turns[i];
    return { answer };
  }

  function capturePrompt(/** @type {any} */ record, /** @type {number} */ now) {
    const conversation = adapter.conversationId(location);
    if (!conversation && now - record.at < CONVERSATION_WAIT_MS) return;
    record.conversation = conversation;
    send({
      type: "capture",
      item: { prompt: record.typed, conversation_id: conversation, message_id: record.messageId, url: location.href },
    });
    record.stage = "answer";
  }

  function captureAnswer(/** @type {any} */ record, /** @type {number} */ now) {
    const { answer } = locate(record);
    if (!answer || adapter.isStreaming(answer) || !answer.text) {
      record.answerText = null;
      return now - record.at > ANSWER_GIVE_UP_MS;
    }
    if (answer.text !== record.answerText) {
      record.answerText = answer.text;
      record.answerSince = now;
      return false;
    }
    if (now - record.answerSince < STABLE_MS) return false;
    send({
      type: "capture",
      item: {
        response: answer.text,
        message_id: record.messageId,
        response_message_id: answer.id || `${record.messageId}:answer`,
        conversation_id: record.conversation || adapter.conversationId(location),
        url: location.href,
      },
    });
    return true;
  }

  function tick() {
    try {
      checkHealth();
      findNewTurns();
      const now = Date.now();
      for (let i = tracked.length - 1; i >= 0; i -= 1) {
        const record = tracked[i];
        if (record.stage === "prompt") capturePrompt(record, now);
        else if (captureAnswer(record, now)) tracked.splice(i, 1);
      }
    } catch (error) {
      console.debug("memory layer: capture skipped", error);
    }
  }

  /* ---- submit and injection ---- */

  const withBudget = (promise, ms) =>
    Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve(null), Math.max(0, ms)))]);

  function resubmit(editor) {
    bypass = true;
    try {
      const button = adapter.submitButton();
      if (button) button.click();
      else editor.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", code: "Enter", bubbles: true, cancelable: true }));
    } finally {
      bypass = false;
    }
  }

  async function injectThenSubmit(editor, typed) {
    const started = performance.now();
    try {
      const answer = await withBudget(send({ type: "context", prompt: typed }), settings.budgetMs);
      const left = settings.budgetMs - (performance.now() - started);
      if (answer && answer.context && answer.memories && answer.memories.length && left > 0) {
        if (await ML.editing.insertAtStart(editor, `${answer.context}\n\n`, left)) {
          send({ type: "injected", memories: answer.memories });
        }
      }
    } catch (error) {
      console.debug("memory layer: sent without memories", error);
    } finally {
      resubmit(editor);
    }
  }

  /* A person's submit only: the page's own scripts cannot make the extension fetch memories. */
  function onSubmit(/** @type {Event} */ event) {
    if (bypass || !event.isTrusted) return;
    try {
      const editor = adapter.editor();
      if (!editor || !active()) return;
      const typed = typedText(editor);
      if (!typed) return;
      ML.chip.hide();
      if (settings.capture) noteSubmit(typed);
      suggested = null;
      if (!injecting("auto")) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      injectThenSubmit(editor, typed);
    } catch (error) {
      console.debug("memory layer: submit left alone", error);
    }
  }

  const inEditor = (/** @type {EventTarget | null} */ target) => {
    const editor = adapter.editor();
    return Boolean(editor && target instanceof Node && editor.contains(target));
  };

  window.addEventListener(
    "keydown",
    (event) => {
      if (!event.isTrusted) return;
      // By the key's place, not its character: Option+M gives "µ" on macOS.
      if (event.code === "KeyM" && event.altKey && !event.ctrlKey && !event.metaKey && ML.chip.visible) {
        event.preventDefault();
        ML.chip.trigger();
        return;
      }
      if (!inEditor(event.target)) return;
      personTypedAt = Date.now();
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      onSubmit(event);
    },
    true,
  );
  for (const type of ["paste", "drop"]) {
    window.addEventListener(
      type,
      (event) => {
        if (event.isTrusted && inEditor(event.target)) personTypedAt = Date.now();
      },
      true,
    );
  }
  window.addEventListener(
    "click",
    (event) => {
      if (event.isTrusted && adapter.isSubmitControl(event.target)) onSubmit(event);
    },
    true,
  );

  async function insertSuggestion(/** @type {ContextAnswer} */ answer) {
    ML.chip.hide();
    const editor = adapter.editor();
    if (!editor) return;
    try {
      if (await ML.editing.insertAtStart(editor, `${answer.context}\n\n`, 1000)) {
        suggested = { block: answer.context };
        send({ type: "injected", memories: answer.memories });
      }
    } catch (error) {
      console.debug("memory layer: suggestion not inserted", error);
    }
  }

  async function suggest() {
    const editor = adapter.editor();
    if (!editor || !injecting("suggest") || suggested) return ML.chip.hide();
    const typed = typedText(editor);
    if (typed.length < SUGGEST_MIN_CHARS) return ML.chip.hide();
    const answer = await send({ type: "context", prompt: typed });
    if (typedText(editor) !== typed || suggested) return undefined;
    if (answer && answer.context && answer.memories && answer.memories.length) {
      ML.chip.show(editor, answer.memories.length, () => insertSuggestion(answer));
    } else {
      ML.chip.hide();
    }
    return undefined;
  }

  document.addEventListener(
    "input",
    (event) => {
      // A script's execCommand makes a trusted input event too, but no key press before it.
      const typing = event.isTrusted && Date.now() - personTypedAt < TYPING_MS;
      if (!typing || !inEditor(event.target) || !injecting("suggest")) return;
      clearTimeout(suggestTimer);
      suggestTimer = setTimeout(suggest, SUGGEST_DEBOUNCE_MS);
    },
    true,
  );

  /* ---- start ---- */

  userTurns().forEach((/** @type {any} */ turn) => seen.add(turn.element));
  let scheduled = false;
  new MutationObserver(() => {
    if (scheduled) return;
    scheduled = true;
    setTimeout(() => {
      scheduled = false;
      tick();
    }, 150);
  }).observe(document.documentElement, { childList: true, subtree: true, characterData: true, attributes: true });
  setInterval(tick, 400);
  setInterval(refreshSettings, 5000);
  window.addEventListener("focus", refreshSettings);
  document.addEventListener("visibilitychange", refreshSettings);
  refreshSettings().then(tick);
})();
