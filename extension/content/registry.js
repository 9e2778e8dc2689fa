/*
 * The namespace the content scripts share (content scripts cannot be ES modules, so the
 * manifest loads these files in order). Each adapter registers itself here; core.js picks the
 * one whose hosts include the page's.
 *
 * The contract every adapter answers, and nothing else:
 *   id, name, hosts                       which site it is
 *   editor()                              the editable element the person types into, or null
 *   submitButton()                        the send control, or null
 *   isSubmitControl(element)              whether a click on element sends
 *   turns()                               [{role: "user"|"assistant", element, id, text}] in page order;
 *                                         id is the site's message id or null
 *   isStreaming(turn)                     whether an answer is still being written
 *   conversationId(location)              the conversation id in the URL, or null
 *   isPrivate(location)                   a temporary chat, never captured
 */
(() => {
  "use strict";
  const adapters = [];
  globalThis.MemoryLayer = {
    adapters,
    register(adapter) {
      adapters.push(Object.freeze(adapter));
    },
    forHost(hostname) {
      return adapters.find((adapter) => adapter.hosts.includes(hostname)) || null;
    },
    /* Text as the person reads it, whitespace at the ends removed. */
    text(element) {
      if (!element) return "";
      return (element.innerText ?? element.textContent ?? "").replace(/\u00a0/g, " ").trim();
    },
    visible(element) {
      return Boolean(element && element.isConnected && element.getClientRects().length > 0);
    },
  };
})();
