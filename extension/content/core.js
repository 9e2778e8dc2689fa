/*
 * What every site shares: noticing a submit, injecting memories (auto / suggest / off),
 * capturing the prompt as typed and the answer once it has finished, and reporting whether
 * the page still looks like the site the adapter knows. Everything site-specific comes from
 * the adapter; the server is reached only through the service worker, which holds the key.
 *
 * Fail open: any error here leaves the person's message going out as typed.
 */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
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

  const startedAt = Date.now();
  const session = Math.random().toString(36).slice(2, 10);
  let settings = { capture: false, inject: "off", paused: true, budgetMs: 800 };
  let health = "unknown";
  let awaitingTurnSince = 0;
  let lastSubmit = { typed: "", at: 0 };
  let suggested = null;
  let bypass = false;
  let suggestTimer = 0;
  const pending = [];
  const tracked = [];
  const known = new Set();

  async function send(message) {
    try {
      return await chrome.runtime.sendMessage({ ...message, site: adapter.id });
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

  function turnKey(turn, index) {
    return turn.id || `${adapter.conversationId(location) || "new"}#${index}`;
  }

  function noteSubmit(typed) {
    const now = Date.now();
    // Enter and a click on send can both fire for one message.
    if (typed === lastSubmit.typed && now - lastSubmit.at < 2000) return;
    lastSubmit = { typed, at: now };
    pending.push({ typed, at: now });
    if (!awaitingTurnSince) awaitingTurnSince = now;
  }

  function findNewTurns() {
    const now = Date.now();
    while (pending.length && now - pending[0].at > PENDING_MS) pending.shift();
    userTurns().forEach((turn, index) => {
      const key = turnKey(turn, index);
      if (known.has(key)) return;
      known.add(key);
      awaitingTurnSince = 0;
      // A turn without a submit seen here was rendered from history: never captured.
      const submit = pending.shift();
      if (!submit || !capturing()) return;
      tracked.push({ stage: "prompt", at: submit.at, typed: submit.typed, siteId: turn.id, index });
    });
  }

  function locate(record) {
    const turns = adapter.turns();
    let position = -1;
    let seen = -1;
    turns.forEach((turn, i) => {
      if (turn.role !== "user") return;
      seen += 1;
      if (record.siteId ? turn.id === record.siteId : seen === record.index) position = i;
    });
    if (position < 0) return { user: null, answer: null };
    let answer = null;
    for (let i = position + 1; i < turns.length && turns[i].role === "assistant"; i += 1) answer = turns[i];
    return { user: turns[position], answer };
  }

  function capturePrompt(record, now) {
    const conversation = adapter.conversationId(location);
    if (!conversation && now - record.at < CONVERSATION_WAIT_MS) return;
    record.conversation = conversation;
    record.messageId = record.siteId || `${adapter.id}:${conversation || session}:${record.index}`;
    send({
      type: "capture",
      item: {
        prompt: record.typed,
        provider: adapter.id,
        conversation_id: conversation,
        message_id: record.messageId,
        url: location.href,
      },
    });
    record.stage = "answer";
  }

  function captureAnswer(record, now) {
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
        provider: adapter.id,
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

  function onSubmit(event) {
    if (bypass) return;
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

  window.addEventListener(
    "keydown",
    (event) => {
      if (event.key === "m" && event.altKey && ML.chip.visible) {
        event.preventDefault();
        ML.chip.trigger();
        return;
      }
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      const editor = adapter.editor();
      if (editor && editor.contains(event.target)) onSubmit(event);
    },
    true,
  );
  window.addEventListener(
    "click",
    (event) => {
      if (adapter.isSubmitControl(event.target)) onSubmit(event);
    },
    true,
  );

  async function insertSuggestion(answer) {
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
      const editor = adapter.editor();
      if (!editor || !editor.contains(event.target) || !injecting("suggest")) return;
      clearTimeout(suggestTimer);
      suggestTimer = setTimeout(suggest, SUGGEST_DEBOUNCE_MS);
    },
    true,
  );

  /* ---- start ---- */

  userTurns().forEach((turn, index) => known.add(turnKey(turn, index)));
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
