/* Gemini (gemini.google.com): a Quill editor inside rich-textarea, custom elements for the
 * turns, a stop button while an answer streams. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  ML.register(
    ML.site({
      id: "gemini",
      name: "Gemini",
      hosts: ["gemini.google.com"],
      editor: 'rich-textarea .ql-editor[contenteditable="true"]',
      send: 'button.send-button[aria-label="Send message"]',
      stop: 'mat-icon[fonticon="stop"], button[aria-label="Stop response"]',
      turns: {
        user: "user-query",
        assistant: "model-response",
        body: { user: [".query-text"], assistant: ["message-content .markdown", "message-content"] },
      },
      conversation: /^\/(?:u\/\d+\/)?app\/([0-9a-f]{8,})/i,
    }),
  );
})();
