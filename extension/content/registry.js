/*
 * The namespace the content scripts share (content scripts cannot be ES modules, so the
 * manifest loads these files in order). Each adapter registers its site here, as selectors and
 * the few rules that are its own; core.js picks the one whose hosts include the page's.
 *
 * The contract every adapter answers, and nothing else:
 *   id, name, hosts                       which site it is
 *   editor()                              the editable element the person types into, or null
 *   submitButton()                        the send control, or null
 *   isSubmitControl(element)              whether a click on element sends
 *   turns()                               [{role: "user"|"assistant", element, id, text}] in page order;
 *                                         id is the site's message id or null (most adapters
 *                                         build it with turnsFrom, from their selectors)
 *   isStreaming(turn)                     whether an answer is still being written
 *   conversationId(location)              the conversation id in the URL, or null
 *   isPrivate(location)                   a temporary chat, never captured
 *
 * An adapter file gives `site(...)` what is its own: `editor`, `send` and `stop` selectors,
 * `turns` ({user, assistant, body, id} for turnsFrom), `conversation` (a pattern whose first
 * group is the id in the URL's path), and `isStreaming` / `isPrivate` where the site needs more
 * than its stop control / never has temporary chats.
 */
(() => {
  "use strict";
  const adapters = [];
  globalThis.MemoryLayer = {
    adapters,
    register(adapter) {
      adapters.push(Object.freeze(adapter));
    },
    /* The contract's functions from a site's selectors and rules. */
    site({ id, name, hosts, editor, send, stop, turns, conversation, isStreaming, isPrivate }) {
      return {
        id,
        name,
        hosts,
        editor: () => document.querySelector(editor),
        submitButton: () => document.querySelector(send),
        isSubmitControl: (element) => Boolean(element && element.closest(send)),
        turns: globalThis.MemoryLayer.turnsFrom(turns),
        isStreaming: isStreaming || (() => document.querySelector(stop) !== null),
        conversationId: (location) => (conversation.exec(location.pathname) || [])[1] || null,
        isPrivate: isPrivate || (() => false),
      };
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
    /*
     * An adapter's turns() from its selectors: `user` and `assistant` match a turn, `body`
     * (per role, a list tried in order) finds its text inside it, `id` reads the site's own
     * message id from it (none: null).
     */
    turnsFrom({ user, assistant, body = {}, id = () => null }) {
      const inside = (element, selectors) => {
        for (const selector of selectors || []) {
          const found = element.querySelector(selector);
          if (found) return found;
        }
        return element;
      };
      return () =>
        Array.from(document.querySelectorAll(`${user}, ${assistant}`), (element) => {
          const role = element.matches(user) ? "user" : "assistant";
          return { role, element, id: id(element) || null, text: globalThis.MemoryLayer.text(inside(element, body[role])) };
        });
    },
  };
})();
