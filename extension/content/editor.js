/* Putting text into a site's editor the way typing does, so the editor's own state follows:
 * contenteditable editors (ProseMirror, Quill, Lexical) ignore a bare DOM change. */
(() => {
  "use strict";
  const ML = globalThis.MemoryLayer;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function caretAtStart(editor) {
    editor.focus({ preventScroll: true });
    const range = document.createRange();
    range.selectNodeContents(editor);
    range.collapse(true);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  /* Some editors (Lexical) apply an insertion a tick after the event: wait for it rather than
   * inserting again. */
  async function arrives(editor, marker, ms) {
    const until = performance.now() + ms;
    for (;;) {
      if (ML.text(editor).includes(marker)) return true;
      if (performance.now() >= until) return false;
      await sleep(10);
    }
  }

  function paste(editor, text) {
    const data = new DataTransfer();
    data.setData("text/plain", text);
    editor.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  }

  ML.editing = {
    /* Insert text before what the person typed; true once the editor shows it. */
    async insertAtStart(editor, text, waitMs) {
      const marker = text.split("\n").find((line) => line.trim()) || text;
      caretAtStart(editor);
      document.execCommand("insertText", false, text);
      if (await arrives(editor, marker, Math.min(waitMs, 150))) return true;
      caretAtStart(editor);
      paste(editor, text);
      return arrives(editor, marker, Math.min(waitMs, 150));
    },

    /* The editor's text without a block this extension inserted. */
    strip(text, block) {
      if (!block) return text.trim();
      const inserted = new Set(block.split("\n").map((line) => line.trim()).filter(Boolean));
      const lines = text.split("\n");
      let start = 0;
      while (start < lines.length && (inserted.has(lines[start].trim()) || !lines[start].trim())) start += 1;
      return lines.slice(start).join("\n").trim();
    },
  };
})();
