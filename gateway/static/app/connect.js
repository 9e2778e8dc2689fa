// Connecting the browser extension in one click. The extension's options page opens this
// dashboard; a script the extension runs here while it waits offers a one-time nonce and the
// name of that browser. Signed in, the person approves: a key is made with the scopes chosen
// and posted, with the nonce, to that script only on this page's own origin. The key is never
// shown, kept in the page's storage, or put in the address.
import { createKey } from "/app/keys.js";

const $ = (id) => document.getElementById(id);

let offer = null; // {nonce, name} from the extension
let deps = null; // the dashboard's API helpers, once signed in

function show() {
  if (!offer || !deps) return;
  $("connect").hidden = false;
  $("connect-name").value = offer.name;
  $("connect-status").textContent = "";
  $("connect-form").hidden = false;
  $("connect").scrollIntoView();
  $("connect-approve").focus();
}

function hide() {
  $("connect-form").hidden = true;
}

function post(message) {
  window.postMessage({ ...message, nonce: offer.nonce }, location.origin);
}

async function approve(event) {
  event.preventDefault();
  const status = $("connect-status");
  const name = $("connect-name").value.trim();
  const created = await createKey(deps, "connect", status, { name });
  if (created === null) return;
  hide();
  status.textContent = "Handing the key to the extension…";
  post({ type: "memory-layer:connect-key", key: created.key });
  deps.keysChanged();
}

function cancel() {
  post({ type: "memory-layer:connect-cancel" });
  offer = null;
  hide();
  $("connect-status").textContent = "Not connected. Connect again from the extension's options.";
}

window.addEventListener("message", (event) => {
  const data = event.data;
  if (event.source !== window || event.origin !== location.origin || !data || typeof data !== "object") return;
  if (data.type === "memory-layer:connect-offer" && typeof data.nonce === "string" && typeof data.name === "string") {
    if (offer && offer.nonce === data.nonce) return;
    offer = { nonce: data.nonce, name: data.name.slice(0, 100) };
    show();
  } else if (data.type === "memory-layer:connect-result" && offer && data.nonce === offer.nonce) {
    offer = null;
    $("connect-status").textContent = data.ok
      ? "Connected: the extension keeps your chats on this server now. You can close this tab."
      : `The extension has the key but could not use it: ${data.message}.`;
  }
});
// The extension's script may have started before this module: ask it to offer again.
window.postMessage({ type: "memory-layer:connect-ready" }, location.origin);

// Called on every sign-in with the dashboard's API helpers; handlers are attached once.
export function offerConnect(helpers) {
  if (deps === null) {
    $("connect-form").addEventListener("submit", approve);
    $("connect-cancel").addEventListener("click", cancel);
  }
  deps = helpers;
  show();
}
