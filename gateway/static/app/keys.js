// The "API keys" section: create a key for a connected app (shown once, with Copy), list
// the keys with their last use, revoke one after a confirmation. Keys are managed with the
// dashboard's sign-in; a key itself can never manage keys.
const $ = (id) => document.getElementById(id);
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

let deps = null;

function when(value, never) {
  return value ? dateFormat.format(new Date(value)) : never;
}

function keyItem(key) {
  const item = document.createElement("li");
  const article = document.createElement("article");
  article.className = "card key";
  article.setAttribute("aria-label", `API key ${key.name}`);
  const name = document.createElement("h3");
  name.className = "key-name";
  name.textContent = key.name;
  const meta = document.createElement("dl");
  const rows = [
    ["Key", `${key.prefix}…`],
    ["Scopes", key.scopes.join(", ")],
    ["Created", when(key.created_at, "")],
    ["Last used", when(key.last_used_at, "Never")],
    ["Expires", when(key.expires_at, "Never")],
  ];
  for (const [label, value] of rows) {
    const term = document.createElement("dt");
    term.textContent = label;
    const detail = document.createElement("dd");
    detail.textContent = value;
    meta.append(term, detail);
  }
  const revoke = document.createElement("button");
  revoke.type = "button";
  revoke.className = "danger";
  revoke.textContent = "Revoke";
  revoke.setAttribute("aria-label", `Revoke ${key.name}`);
  revoke.addEventListener("click", () => revokeKey(key));
  article.append(name, meta, revoke);
  item.append(article);
  return item;
}

async function refresh() {
  const status = $("keys-status");
  const response = await deps.api("/keys");
  if (!response.ok) {
    status.textContent = `Could not list your keys: ${await deps.detail(response)}`;
    return;
  }
  const { keys } = await response.json();
  $("key-list").replaceChildren(...keys.map(keyItem));
  $("keys-empty").hidden = keys.length > 0;
}

function hideNewKey() {
  $("new-key-value").value = "";
  $("copy-status").textContent = "";
  $("new-key").hidden = true;
}

// Makes a key with the scopes ticked in the form (its `${prefix}-read` and `${prefix}-write`
// boxes) and the fields of `body`: the key made, or null once `status` says why not.
export async function createKey(helpers, prefix, status, body) {
  const scopes = ["read", "write"].filter((scope) => $(`${prefix}-${scope}`).checked);
  if (scopes.length === 0) {
    status.textContent = "Choose at least one scope.";
    return null;
  }
  const response = await helpers.api("/keys", { method: "POST", body: { ...body, scopes } });
  if (!response.ok) {
    status.textContent = `The key was not created: ${await helpers.detail(response)}`;
    return null;
  }
  return response.json();
}

async function create(event) {
  event.preventDefault();
  const status = $("keys-status");
  const body = { name: $("key-name").value.trim() };
  const days = $("key-expiry").value;
  if (days) body.expires_in_days = Number(days);
  const created = await createKey(deps, "key", status, body);
  if (created === null) return;
  status.textContent = `Created “${created.name}”.`;
  $("key-form").reset();
  $("new-key-value").value = created.key;
  $("new-key").hidden = false;
  $("new-key-value").select();
  await refresh();
}

async function copy() {
  const field = $("new-key-value");
  const status = $("copy-status");
  try {
    await navigator.clipboard.writeText(field.value);
    status.textContent = "Copied.";
  } catch {
    field.select();
    status.textContent = "Copying was blocked: select the key and copy it yourself.";
  }
}

async function revokeKey(key) {
  $("confirm-revoke-text").textContent = `${key.name} (${key.prefix}…)`;
  const opener = document.activeElement;
  if (!(await deps.ask($("confirm-revoke")))) {
    opener?.focus();
    return;
  }
  const response = await deps.api(`/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
  $("keys-status").textContent =
    response.ok || response.status === 404
      ? `Revoked “${key.name}”. Apps using it lose access within seconds.`
      : `The key was not revoked: ${await deps.detail(response)}`;
  await refresh();
  $("key-name").focus();
}

// Called on every sign-in with the dashboard's API helpers; handlers are attached once.
export async function loadKeys(helpers) {
  if (deps === null) {
    $("key-form").addEventListener("submit", create);
    $("copy-key").addEventListener("click", copy);
    $("new-key-done").addEventListener("click", hideNewKey);
  }
  deps = helpers;
  hideNewKey();
  $("keys-status").textContent = "";
  try {
    await refresh();
  } catch {
    // signed out meanwhile: the sign-in form is showing
  }
}
