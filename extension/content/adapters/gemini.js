/* Gemini (gemini.google.com): a Quill editor inside rich-textarea, custom elements for the
 * turns, a stop button while an answer streams. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  const EDITOR = 'rich-textarea .ql-editor[contenteditable="true"]';
  const SEND = 'button.send-button[aria-label="Send message"]';
  const STOP = 'mat-icon[fonticon="stop"], button[aria-label="Stop response"]';
  const CONVERSATION = /^\/(?:u\/\d+\/)?app\/([0-9a-f]{8,})/i;

  ML.register({
    id: "gemini",
    name: "Gemini",
    hosts: ["gemini.google.com"],
    editor: () => document.querySelector(EDITOR),
    submitButton: () => document.querySelector(SEND),
    isSubmitControl: (element) => Boolean(element && element.closest(SEND)),
    turns: () =>
      Array.from(document.querySelectorAll("user-query, model-response"), (element) => {
        const role = element.localName === "user-query" ? "user" : "assistant";
        const body =
          role === "user"
            ? element.querySelector(".query-text") || element
            : element.querySelector("message-content .markdown") || element.querySelector("message-content");
        return { role, element, id: null, text: ML.text(body) };
      }),
    isStreaming: () => document.querySelector(STOP) !== null,
    conversationId: (location) => (CONVERSATION.exec(location.pathname) || [])[1] || null,
    isPrivate: () => false,
  });
})();
