/* Perplexity (www.perplexity.ai): a Lexical editor (#ask-input), queries and answers as
 * blocks of the thread, a stop button while an answer streams. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  const EDITOR = '#ask-input[contenteditable="true"]';
  const SEND = 'button[aria-label="Submit"], button[data-testid="submit-button"]';
  const STOP = 'button[aria-label*="Stop"]';
  const USER = 'div[class~="group/query"]';
  const ASSISTANT = 'div[id^="markdown-content-"]';
  const CONVERSATION = /^\/search\/([^/?#]+)/;

  ML.register({
    id: "perplexity",
    name: "Perplexity",
    hosts: ["www.perplexity.ai"],
    editor: () => document.querySelector(EDITOR),
    submitButton: () => document.querySelector(SEND),
    isSubmitControl: (element) => Boolean(element && element.closest(SEND)),
    turns: () =>
      Array.from(document.querySelectorAll(`${USER}, ${ASSISTANT}`), (element) => {
        const role = element.matches(USER) ? "user" : "assistant";
        const body = role === "assistant" ? element.querySelector(".prose") || element : element;
        return { role, element, id: null, text: ML.text(body) };
      }),
    isStreaming: () => document.querySelector(STOP) !== null,
    conversationId: (location) => (CONVERSATION.exec(location.pathname) || [])[1] || null,
    isPrivate: () => false,
  });
})();
