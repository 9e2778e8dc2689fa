/* ChatGPT (chatgpt.com, chat.openai.com): a ProseMirror editor, turns carrying the site's
 * own message ids, a stop button while an answer streams. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  const EDITOR = '#prompt-textarea[contenteditable="true"], form[data-type="unified-composer"] [contenteditable="true"]';
  const SEND = '#composer-submit-button, button[data-testid="send-button"]';
  const STOP = 'button[data-testid="stop-button"]';
  const TURN = '[data-message-author-role="user"][data-message-id], [data-message-author-role="assistant"][data-message-id]';
  const CONVERSATION = /^\/(?:g\/[^/]+\/)?c\/([0-9a-f-]{8,})/i;

  ML.register({
    id: "chatgpt",
    name: "ChatGPT",
    hosts: ["chatgpt.com", "chat.openai.com"],
    editor: () => document.querySelector(EDITOR),
    submitButton: () => document.querySelector(SEND),
    isSubmitControl: (element) => Boolean(element && element.closest(SEND)),
    turns: () =>
      Array.from(document.querySelectorAll(TURN), (element) => {
        const role = element.getAttribute("data-message-author-role");
        const body = element.querySelector(role === "user" ? ".whitespace-pre-wrap" : ".markdown");
        return { role, element, id: element.getAttribute("data-message-id"), text: ML.text(body || element) };
      }),
    isStreaming: () => document.querySelector(STOP) !== null,
    conversationId: (location) => (CONVERSATION.exec(location.pathname) || [])[1] || null,
    isPrivate: (location) => new URLSearchParams(location.search).get("temporary-chat") === "true",
  });
})();
