/* Claude (claude.ai): a Tiptap (ProseMirror) editor, no message ids in the page, a streaming
 * flag on the answer being written. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  const EDITOR = 'div.ProseMirror[contenteditable="true"]';
  const SEND = 'button[aria-label="Send message"]';
  const STOPPABLE = 'button[aria-label="Stop response"]';
  const USER = '[data-testid="user-message"]';
  const ASSISTANT = ".font-claude-response";
  const CONVERSATION = /^\/chat\/([0-9a-f-]{8,})/i;

  ML.register({
    id: "claude",
    name: "Claude",
    hosts: ["claude.ai"],
    editor: () => document.querySelector(EDITOR),
    submitButton: () => document.querySelector(SEND),
    isSubmitControl: (element) => Boolean(element && element.closest(SEND)),
    turns: () =>
      Array.from(document.querySelectorAll(`${USER}, ${ASSISTANT}`), (element) => {
        const role = element.matches(USER) ? "user" : "assistant";
        const body = role === "assistant" ? element.querySelector(".standard-markdown") : element;
        return { role, element, id: null, text: ML.text(body || element) };
      }),
    isStreaming: (turn) =>
      document.querySelector(STOPPABLE) !== null ||
      document.querySelector('[data-is-streaming="true"]') !== null ||
      Boolean(turn && turn.element.closest('[data-is-streaming="true"]')),
    conversationId: (location) => (CONVERSATION.exec(location.pathname) || [])[1] || null,
    isPrivate: (location) => new URLSearchParams(location.search).has("incognito"),
  });
})();
