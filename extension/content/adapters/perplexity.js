/* Perplexity (www.perplexity.ai): a Lexical editor (#ask-input), queries and answers as
 * blocks of the thread, a stop button while an answer streams. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  ML.register(
    ML.site({
      id: "perplexity",
      name: "Perplexity",
      hosts: ["www.perplexity.ai"],
      editor: '#ask-input[contenteditable="true"]',
      send: 'button[aria-label="Submit"], button[data-testid="submit-button"]',
      stop: 'button[aria-label*="Stop"]',
      turns: { user: 'div[class~="group/query"]', assistant: 'div[id^="markdown-content-"]', body: { assistant: [".prose"] } },
      conversation: /^\/search\/([^/?#]+)/,
    }),
  );
})();
