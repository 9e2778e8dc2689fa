/* Claude (claude.ai): a Tiptap (ProseMirror) editor, no message ids in the page, a streaming
 * flag on the answer being written. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  const STOPPABLE = 'button[aria-label="Stop response"]';
  const STREAMING = '[data-is-streaming="true"]';
  ML.register(
    ML.site({
      id: "claude",
      name: "Claude",
      hosts: ["claude.ai"],
      editor: 'div.ProseMirror[contenteditable="true"]',
      send: 'button[aria-label="Send message"]',
      turns: { user: '[data-testid="user-message"]', assistant: ".font-claude-response", body: { assistant: [".standard-markdown"] } },
      isStreaming: (turn) =>
        document.querySelector(STOPPABLE) !== null ||
        document.querySelector(STREAMING) !== null ||
        Boolean(turn && turn.element.closest(STREAMING)),
      conversation: /^\/chat\/([0-9a-f-]{8,})/i,
      isPrivate: (location) => new URLSearchParams(location.search).has("incognito"),
    }),
  );
})();
