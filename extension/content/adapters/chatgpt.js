/* ChatGPT (chatgpt.com, chat.openai.com): a ProseMirror editor, turns carrying the site's
 * own message ids, a stop button while an answer streams. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  ML.register(
    ML.site({
      id: "chatgpt",
      name: "ChatGPT",
      hosts: ["chatgpt.com", "chat.openai.com"],
      editor: '#prompt-textarea[contenteditable="true"], form[data-type="unified-composer"] [contenteditable="true"]',
      send: '#composer-submit-button, button[data-testid="send-button"]',
      stop: 'button[data-testid="stop-button"]',
      turns: {
        user: '[data-message-author-role="user"][data-message-id]',
        assistant: '[data-message-author-role="assistant"][data-message-id]',
        body: { user: [".whitespace-pre-wrap"], assistant: [".markdown"] },
        id: (element) => element.getAttribute("data-message-id"),
      },
      conversation: /^\/(?:g\/[^/]+\/)?c\/([0-9a-f-]{8,})/i,
      isPrivate: (location) => new URLSearchParams(location.search).get("temporary-chat") === "true",
    }),
  );
})();
