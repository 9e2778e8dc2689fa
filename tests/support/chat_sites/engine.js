/*
 * Stand-ins for the chat sites, served at their real hostnames in the browser tests. Each
 * reproduces what the extension relies on: the site's markers, an editor whose state follows
 * input events only (a DOM change without one never reaches the send), send on Enter and on
 * the button, an answer streamed in chunks under the site's streaming marker, the URL moving
 * to the conversation id, and turns rendered again after a reload.
 *
 * window.STANDIN = {site, broken, recent}: broken renames the editor's markers (a site
 * redesign); recent, a number, renders only that many of the last turns after a reload, as the
 * sites do with a long thread.
 */
(() => {
  "use strict";
  const { site, broken, recent } = window.STANDIN;
  const uuid = () => crypto.randomUUID();
  const hex = () => Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
  const el = (tag, attributes = {}, text) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const SITES = {
    chatgpt: {
      start: "/",
      conversation: (path) => (/^\/c\/([^/]+)/.exec(path) || [])[1],
      path: () => `/c/${uuid()}`,
      layout(root) {
        const form = el("form", broken ? {} : { "data-type": "unified-composer" });
        const editor = el("div", { id: broken ? "composer-input" : "prompt-textarea", contenteditable: "true", class: "ProseMirror", role: "textbox", "aria-label": "Message ChatGPT" });
        const send = el("button", { id: "composer-submit-button", "data-testid": "send-button", "aria-label": "Send prompt", type: "button" }, "Send");
        const stop = el("button", { "data-testid": "stop-button", "aria-label": "Stop streaming", type: "button" }, "Stop");
        form.append(editor, send);
        const thread = el("div", { id: "thread" });
        root.append(el("main", {}), thread, form);
        return { editor, send, thread, streaming: (on) => (on ? send.replaceWith(stop) : stop.replaceWith(send)) };
      },
      turn(turn, n) {
        const section = el("section", { "data-testid": `conversation-turn-${n + 1}` });
        const message = el("div", { "data-message-author-role": turn.role, "data-message-id": turn.id });
        const body = el("div", { class: turn.role === "user" ? "whitespace-pre-wrap" : "markdown prose" }, turn.text);
        message.append(body);
        section.append(message);
        return { node: section, body, done: () => section.append(el("button", { "data-testid": "copy-turn-action-button" }, "Copy")) };
      },
    },
    claude: {
      start: "/new",
      conversation: (path) => (/^\/chat\/([^/]+)/.exec(path) || [])[1],
      path: () => `/chat/${uuid()}`,
      layout(root) {
        const thread = el("div", { class: "thread" });
        const editor = el("div", { class: broken ? "tiptap" : "ProseMirror", contenteditable: "true", "data-testid": "chat-input", role: "textbox", "aria-label": "Write your prompt to Claude" });
        const send = el("button", { "aria-label": "Send message", type: "button" }, "Send");
        root.append(thread, el("fieldset", {}), editor, send);
        return { editor, send, thread, streaming: (on) => send.setAttribute("aria-label", on ? "Stop response" : "Send message") };
      },
      turn(turn, n) {
        const row = el("div", { "data-index": String(n) });
        if (turn.role === "user") {
          const body = el("div", { "data-testid": "user-message" }, turn.text);
          row.append(body);
          return { node: row, body, done() {} };
        }
        const wrapper = el("div", { "data-is-streaming": "true" });
        const response = el("div", { class: "font-claude-response" });
        const body = el("div", { class: "standard-markdown" }, turn.text);
        response.append(body);
        wrapper.append(response);
        row.append(wrapper);
        return { node: row, body, done: () => wrapper.setAttribute("data-is-streaming", "false") };
      },
    },
    gemini: {
      start: "/app",
      conversation: (path) => (/^\/app\/([0-9a-f]+)/.exec(path) || [])[1],
      path: () => `/app/${hex()}`,
      layout(root) {
        const thread = el("div", { id: "chat-history" });
        const rich = el(broken ? "div" : "rich-textarea");
        const editor = el("div", { class: "ql-editor", contenteditable: "true", role: "textbox", "aria-label": "Enter a prompt here" });
        rich.append(editor);
        const send = el("button", { class: "send-button", "aria-label": "Send message", type: "button" }, "Send");
        const stop = el("button", { "aria-label": "Stop response", type: "button" });
        stop.append(el("mat-icon", { fonticon: "stop" }, "stop"));
        root.append(thread, rich, send);
        return { editor, send, thread, streaming: (on) => (on ? send.replaceWith(stop) : stop.replaceWith(send)) };
      },
      turn(turn) {
        if (turn.role === "user") {
          const node = el("user-query");
          const body = el("div", { class: "query-text" }, turn.text);
          node.append(body);
          return { node, body, done() {} };
        }
        const node = el("model-response");
        const content = el("message-content");
        const body = el("div", { class: "markdown" }, turn.text);
        content.append(body);
        node.append(content);
        return { node, body, done: () => node.append(el("message-actions")) };
      },
    },
    perplexity: {
      start: "/",
      conversation: (path) => (/^\/search\/([^/]+)/.exec(path) || [])[1],
      path: (text) => `/search/${text.toLowerCase().replace(/[^a-z0-9]+/g, "-").slice(0, 30)}-${hex().slice(0, 8)}`,
      // Lexical applies an insertion a tick after the event.
      lexical: true,
      layout(root) {
        const thread = el("div", { class: "thread" });
        const editor = el("div", { id: broken ? "ask-box" : "ask-input", contenteditable: "true", "data-lexical-editor": "true", role: "textbox", "aria-label": "Ask anything" });
        const send = el("button", { "aria-label": "Submit", "data-testid": "submit-button", type: "button" }, "Submit");
        const stop = el("button", { "aria-label": "Stop generating", type: "button" }, "Stop");
        root.append(thread, editor, send);
        return { editor, send, thread, streaming: (on) => (on ? send.replaceWith(stop) : stop.replaceWith(send)) };
      },
      turn(turn, n) {
        if (turn.role === "user") {
          const body = el("div", { class: "group/query text-lg" }, turn.text);
          return { node: body, body, done() {} };
        }
        const node = el("div", { id: `markdown-content-${n}` });
        const body = el("div", { class: "prose" }, turn.text);
        node.append(body);
        return { node, body, done() {} };
      },
    },
  }[site];

  const root = el("div", { id: "app" });
  document.body.append(root);
  const ui = SITES.layout(root);
  let state = "";
  let streaming = false;
  let count = 0;
  const sent = JSON.parse(localStorage.getItem("standin:sent") || "[]");
  // For bench/bench_extension.py: the time from a press of Enter to the site's send.
  const delays = [];
  let pressed = 0;
  window.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.isTrusted) pressed = performance.now();
  }, true);
  // answering: from a send until the answer's turn is closed and the send control is back. The
  // last words show a moment before that, and closing the turn can move the composer.
  window.standin = { sent, delays, state: () => state, answering: () => streaming };

  const key = (id) => `standin:conversation:${id}`;
  const load = (id) => JSON.parse(localStorage.getItem(key(id)) || "[]");
  const save = (id, turns) => localStorage.setItem(key(id), JSON.stringify(turns));

  function render(turn) {
    const view = SITES.turn(turn, count);
    count += 1;
    ui.thread.append(view.node);
    return view;
  }

  ui.editor.addEventListener("input", () => {
    state = ui.editor.innerText;
  });

  // Lexical and ProseMirror take pastes themselves, as plain text.
  ui.editor.addEventListener("paste", (event) => {
    event.preventDefault();
    const text = event.clipboardData.getData("text/plain");
    const selection = window.getSelection();
    if (!selection.rangeCount) return;
    const range = selection.getRangeAt(0);
    range.deleteContents();
    range.insertNode(document.createTextNode(text));
    ui.editor.dispatchEvent(new InputEvent("input", { inputType: "insertFromPaste", bubbles: true }));
  });

  if (SITES.lexical) {
    ui.editor.addEventListener("beforeinput", (event) => {
      if (event.inputType !== "insertText" || !event.data || !event.data.includes("\n")) return;
      event.preventDefault();
      const range = window.getSelection().getRangeAt(0).cloneRange();
      setTimeout(() => {
        range.insertNode(document.createTextNode(event.data));
        ui.editor.dispatchEvent(new InputEvent("input", { inputType: "insertText", bubbles: true }));
      }, 0);
    });
  }

  async function stream(conversation, turns, question) {
    streaming = true;
    ui.streaming(true);
    const answer = { role: "assistant", id: uuid(), text: "" };
    const view = render(answer);
    const last = question.split("\n").filter((line) => line.trim()).pop() || question;
    const words = `Here is what I know about ${last.trim()}. That is all for now.`.split(" ");
    const size = Math.ceil(words.length / 4);
    for (let i = 0; i < words.length; i += size) {
      await new Promise((resolve) => setTimeout(resolve, 120));
      answer.text = words.slice(0, i + size).join(" ");
      view.body.textContent = answer.text;
    }
    await new Promise((resolve) => setTimeout(resolve, 120));
    view.done();
    turns.push(answer);
    save(conversation, turns);
    streaming = false;
    ui.streaming(false);
  }

  function send() {
    const text = state.trim();
    if (!text || streaming) return;
    let conversation = SITES.conversation(location.pathname);
    if (!conversation) {
      history.pushState({}, "", SITES.path(text));
      conversation = SITES.conversation(location.pathname);
    }
    sent.push(text);
    if (pressed) delays.push(performance.now() - pressed);
    pressed = 0;
    localStorage.setItem("standin:sent", JSON.stringify(sent));
    const turns = load(conversation);
    const turn = { role: "user", id: uuid(), text };
    turns.push(turn);
    save(conversation, turns);
    ui.editor.textContent = "";
    state = "";
    render(turn);
    stream(conversation, turns, text);
  }

  ui.editor.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send();
    }
  });
  ui.send.addEventListener("click", () => send());

  // After a reload the site fetches the conversation and renders its turns again.
  const current = SITES.conversation(location.pathname);
  if (current) {
    setTimeout(() => {
      const turns = load(current);
      for (const turn of recent ? turns.slice(-recent) : turns) render(turn).done();
    }, 300);
  }
})();
