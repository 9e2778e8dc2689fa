/* The one thing the extension adds to a page: a small chip offering memories. Fixed in place
 * over the page (nothing moves), built from text nodes only, and it never takes focus. Its
 * shadow root is closed (the page's scripts cannot reach the button) and only a person's
 * click counts. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;
  let host = null;
  let button = null;
  let action = null;

  function build() {
    host = document.createElement("div");
    host.setAttribute("data-memory-layer", "chip");
    const root = host.attachShadow({ mode: "closed" });
    const style = document.createElement("style");
    style.textContent = `
      button { all: initial; position: fixed; z-index: 2147483647; font: 12px/1.2 system-ui, sans-serif;
        padding: 4px 10px; border-radius: 12px; background: #1f2937; color: #f9fafb; cursor: pointer;
        box-shadow: 0 1px 4px rgba(0,0,0,.3); }
      button:hover { background: #374151; }`;
    button = document.createElement("button");
    button.type = "button";
    button.tabIndex = -1;
    // Keeps the focus (and the caret) in the site's editor.
    button.addEventListener("mousedown", (event) => event.preventDefault());
    button.addEventListener("click", (event) => {
      event.preventDefault();
      event.stopPropagation();
      if (event.isTrusted && action) action();
    });
    root.append(style, button);
    document.documentElement.append(host);
  }

  ML.chip = {
    show(anchor, count, onInsert) {
      if (!host || !host.isConnected) build();
      action = onInsert;
      const label = count === 1 ? "1 memory" : `${count} memories`;
      button.textContent = label;
      button.setAttribute("aria-label", `Insert ${label} (Alt+M)`);
      button.title = `Insert ${label} above your prompt (Alt+M)`;
      const rect = anchor.getBoundingClientRect();
      button.style.top = `${Math.max(4, rect.top - 28)}px`;
      button.style.left = `${Math.max(4, rect.right - 110)}px`;
      host.hidden = false;
    },
    hide() {
      action = null;
      if (host) host.hidden = true;
    },
    get visible() {
      return Boolean(host && !host.hidden && action);
    },
    trigger() {
      if (action) action();
    },
  };
})();
