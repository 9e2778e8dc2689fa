// The dashboard: sign-in, timeline, search, edit and delete, export and import, overview.
// It talks only to this server's HTTP API, with the same bearer token the extension uses.
import { offerConnect } from "/app/connect.js";
import { ImportError, itemsFromFile } from "/app/imports.js";
import { loadKeys } from "/app/keys.js";

const TOKEN_KEY = "memory-layer.access_token";
// The email sign-in this tab started: a token coming back for that address was asked for.
const PENDING_KEY = "memory-layer.sign_in_pending";
const PENDING_MAX_MS = 60 * 60 * 1000;
const PAGE_SIZE = 50;
const BATCH_SIZE = 256;
const CHART_DAYS = 30;
const DELETE_ALL_PHRASE = "delete all";

const $ = (id) => document.getElementById(id);
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

const state = {
  token: null,
  claims: null,
  cursor: "",
  loading: false,
  memories: new Map(), // id -> memory, everything shown in the timeline
  exchanges: new Map(), // memory id -> <li> holding its prompt and answer
};

class SignedOut extends Error {}

// --- sign-in ---------------------------------------------------------------------------

function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "=")));
  } catch {
    return null;
  }
}

// Supabase's redirect (and `memory-layer open`) put the token in the fragment; it must not
// stay in the address bar, the history or a bookmark.
function takeTokenFromFragment() {
  if (!location.hash.startsWith("#") || location.hash.length < 2) return { token: null, error: null };
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("access_token");
  const error = params.get("error_description") || params.get("error");
  if (token || error) history.replaceState(null, "", location.pathname + location.search);
  return { token, error };
}

function showSignIn(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.claims = null;
  $("dashboard").hidden = true;
  $("nav").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("signin-message").textContent = message || "";
  $("signin-message").hidden = !message;
  $("token").focus();
}

async function offerSupabase() {
  const config = await (await fetch("/app/config.json")).json();
  if (!config.supabase_url || !config.supabase_anon_key) return;
  $("supabase-signin").hidden = false;
  $("email-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("email-status");
    const redirect = `${location.origin}/app/`;
    const email = $("email").value.trim().toLowerCase();
    sessionStorage.setItem(PENDING_KEY, JSON.stringify({ email, at: Date.now() }));
    status.textContent = "Sending…";
    try {
      const response = await fetch(
        `${config.supabase_url}/auth/v1/otp?redirect_to=${encodeURIComponent(redirect)}`,
        {
          method: "POST",
          headers: { apikey: config.supabase_anon_key, "Content-Type": "application/json" },
          body: JSON.stringify({ email: $("email").value, create_user: true }),
        },
      );
      status.textContent = response.ok
        ? "Check your inbox: the link in the email brings you back here signed in."
        : `The sign-in service refused: ${await detail(response)}`;
    } catch {
      status.textContent = "The sign-in service could not be reached.";
    }
  });
}

// Whether this tab asked for the token: it sent a sign-in link to the token's own email
// address within the hour. Asked once: the pending sign-in is used up either way.
function startedHere(claims) {
  const raw = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  if (!raw || typeof claims.email !== "string") return false;
  try {
    const { email, at } = JSON.parse(raw);
    return claims.email.toLowerCase() === email && Date.now() - at < PENDING_MAX_MS;
  } catch {
    return false;
  }
}

function expired(claims) {
  return typeof claims.exp === "number" && claims.exp * 1000 <= Date.now();
}

// A token in a link is only taken when this tab asked for it, or once the person, shown whose
// account it is, says so: a link someone sent them must not sign them in to another account.
async function confirmedByPerson(token) {
  const claims = claimsOf(token);
  // Nothing to confirm for what signIn refuses anyway.
  if (!claims || typeof claims.sub !== "string" || expired(claims)) return true;
  if (startedHere(claims)) return true;
  $("confirm-sign-in-account").textContent = claims.email || claims.sub;
  return ask($("confirm-sign-in"));
}

function notify(message) {
  const notice = $("dashboard-notice");
  notice.textContent = message;
  notice.hidden = !message;
}

async function signIn(token) {
  const claims = claimsOf(token);
  if (!claims || typeof claims.sub !== "string") {
    showSignIn("That is not an access token. Sign in again.");
    return;
  }
  if (expired(claims)) {
    showSignIn("Your sign-in has expired. Sign in again.");
    return;
  }
  state.token = token;
  state.claims = claims;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await resetTimeline();
  } catch (error) {
    if (error instanceof SignedOut) return;
    throw error;
  }
  $("signin").hidden = true;
  $("dashboard").hidden = false;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = claims.email || claims.sub;
  loadOverview();
  loadKeys({ api, detail, ask });
  offerConnect({ api, detail, keysChanged: () => loadKeys({ api, detail, ask }) });
}

// --- the API -----------------------------------------------------------------------------

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    showSignIn("Your sign-in has expired or was refused. Sign in again.");
    throw new SignedOut();
  }
  return response;
}

async function detail(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch {
    // not JSON: the status line says enough
  }
  return `${response.status} ${response.statusText}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// --- cards -------------------------------------------------------------------------------

function card(memory, { score } = {}) {
  const article = $("card").content.firstElementChild.cloneNode(true);
  article.dataset.id = memory.id;
  article.setAttribute("aria-label", `${memory.kind === "prompt" ? "Prompt" : "Answer"}, ${memory.provider}`);
  article.classList.add(memory.kind);
  article.querySelector(".kind").textContent = memory.kind === "prompt" ? "Prompt" : "Answer";
  article.querySelector(".provider").textContent = memory.provider;
  const time = article.querySelector("time");
  time.dateTime = memory.created_at;
  time.textContent = dateFormat.format(new Date(memory.created_at));
  if (score !== undefined) article.querySelector(".score").textContent = `score ${score.toFixed(2)}`;
  if (memory.updated_at) {
    time.title = `Edited ${dateFormat.format(new Date(memory.updated_at))}`;
    time.after(" (edited)");
  }
  article.querySelector(".text").textContent = memory.text;
  article.querySelector(".edit").addEventListener("click", () => edit(article, memory.id));
  article.querySelector(".delete").addEventListener("click", () => remove(memory.id));
  return article;
}

function showLinked(article, memory) {
  const partner = state.memories.get(memory.kind === "prompt" ? memory.response_id : memory.prompt_id);
  if (!partner) return;
  const box = article.querySelector(".linked");
  box.querySelector(".linked-label").textContent = memory.kind === "prompt" ? "Answer:" : "In reply to:";
  box.querySelector(".linked-text").textContent = partner.text;
  box.hidden = false;
}

function articlesOf(id) {
  return document.querySelectorAll(`article[data-id="${CSS.escape(id)}"]`);
}

// A prompt and its answer read as one exchange: whichever arrives second joins the first's <li>.
function addToTimeline(memory) {
  state.memories.set(memory.id, memory);
  const article = card(memory);
  const partnerId = memory.kind === "prompt" ? memory.response_id : memory.prompt_id;
  let item = partnerId ? state.exchanges.get(partnerId) : undefined;
  if (item) {
    if (memory.kind === "prompt") item.prepend(article);
    else item.append(article);
  } else {
    item = document.createElement("li");
    item.className = "exchange";
    item.append(article);
    $("memories").append(item);
  }
  state.exchanges.set(memory.id, item);
}

async function resetTimeline() {
  state.cursor = "";
  state.memories.clear();
  state.exchanges.clear();
  $("memories").replaceChildren();
  await loadMore();
}

async function loadMore() {
  if (state.loading || state.cursor === null) return;
  state.loading = true;
  const status = $("timeline-status");
  status.textContent = "Loading…";
  try {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.cursor) params.set("cursor", state.cursor);
    const response = await api(`/memories?${params}`);
    if (!response.ok) {
      status.textContent = `Could not load memories: ${await detail(response)}`;
      return;
    }
    const page = await response.json();
    page.memories.forEach(addToTimeline);
    state.cursor = page.next_cursor || null;
    $("load-more").hidden = state.cursor === null;
    status.textContent = state.memories.size
      ? `${state.memories.size} memories shown${state.cursor === null ? ", that is all of them" : ""}.`
      : "No memories yet. Use the extension, or import a ChatGPT or Claude export below.";
  } finally {
    state.loading = false;
  }
}

// --- edit and delete ---------------------------------------------------------------------

function edit(article, id) {
  if (article.querySelector("textarea")) return;
  const text = article.querySelector(".text");
  const actions = article.querySelector(".actions");
  const status = article.querySelector(".card-status");
  const form = document.createElement("form");
  form.className = "editor";
  const fieldId = `edit-${id}-${Math.random().toString(36).slice(2)}`;
  form.innerHTML = `<label for="${fieldId}">Edit text</label>
    <textarea id="${fieldId}" rows="4" maxlength="50000" required></textarea>
    <div class="actions"><button type="submit">Save</button>
    <button type="button" class="cancel">Cancel</button></div>`;
  const area = form.querySelector("textarea");
  area.value = text.textContent;
  const close = () => {
    form.remove();
    text.hidden = false;
    actions.hidden = false;
    article.querySelector(".edit").focus();
  };
  form.querySelector(".cancel").addEventListener("click", close);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "Saving…";
    const response = await api(`/memories/${encodeURIComponent(id)}`, {
      method: "PATCH",
      body: { text: area.value },
    });
    if (!response.ok) {
      status.textContent = `Not saved: ${await detail(response)}`;
      return;
    }
    const updated = await response.json();
    if (state.memories.has(id)) state.memories.set(id, updated);
    for (const each of articlesOf(id)) each.querySelector(".text").textContent = updated.text;
    status.textContent = "Saved.";
    close();
  });
  text.hidden = true;
  actions.hidden = true;
  text.after(form);
  area.focus();
}

function ask(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = "cancel";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

async function remove(id) {
  const memory = state.memories.get(id);
  const shown = articlesOf(id)[0];
  $("confirm-delete-text").textContent = memory ? memory.text : shown.querySelector(".text").textContent;
  const opener = document.activeElement;
  if (!(await ask($("confirm-delete")))) {
    opener?.focus();
    return;
  }
  const response = await api(`/memories/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (!response.ok && response.status !== 404) {
    shown.querySelector(".card-status").textContent = `Not deleted: ${await detail(response)}`;
    return;
  }
  // Focus moves to the card after the one removed, so keyboard users keep their place.
  const cards = [...document.querySelectorAll("#memories article")];
  const next = cards[cards.findIndex((a) => a.dataset.id === id) + 1];
  for (const article of articlesOf(id)) {
    const item = article.parentElement;
    article.remove();
    if (item.classList.contains("exchange") && !item.children.length) item.remove();
  }
  state.memories.delete(id);
  state.exchanges.delete(id);
  $("timeline-status").textContent = "Memory deleted.";
  (next?.querySelector(".delete") || $("timeline-title")).focus();
  loadOverview();
}

async function removeAll() {
  const phrase = $("delete-all-phrase");
  phrase.value = "";
  $("delete-all-confirm").disabled = true;
  if (!(await ask($("confirm-delete-all")))) return;
  const response = await api("/memories", { method: "DELETE" });
  const status = $("import-status");
  if (!response.ok) {
    status.textContent = `Nothing deleted: ${await detail(response)}`;
    return;
  }
  const { deleted } = await response.json();
  $("results").replaceChildren();
  $("search-status").textContent = "";
  await resetTimeline();
  status.textContent = `Deleted ${deleted} memories.`;
  loadOverview();
}

// --- search ------------------------------------------------------------------------------

function dayBoundary(value, endOfDay) {
  if (!value) return null;
  return new Date(`${value}T${endOfDay ? "23:59:59.999" : "00:00:00"}`).toISOString();
}

async function search(event) {
  event.preventDefault();
  const status = $("search-status");
  const filters = {};
  if ($("provider").value) filters.providers = [$("provider").value];
  if ($("kind").value) filters.kind = $("kind").value;
  const after = dayBoundary($("after").value, false);
  const before = dayBoundary($("before").value, true);
  if (after) filters.created_after = after;
  if (before) filters.created_before = before;
  status.textContent = "Searching…";
  const response = await api("/search", {
    method: "POST",
    body: { query: $("query").value, mode: $("mode").value, top_k: 20, filters },
  });
  if (!response.ok) {
    status.textContent = `Search failed: ${await detail(response)}`;
    return;
  }
  const { results } = await response.json();
  const list = $("results");
  list.replaceChildren(
    ...results.map((result) => {
      const item = document.createElement("li");
      const article = card(result, { score: result.score });
      showLinked(article, result);
      item.append(article);
      return item;
    }),
  );
  status.textContent = results.length
    ? `${results.length} ${results.length === 1 ? "memory matches" : "memories match"}.`
    : "Nothing matches.";
}

// --- export and import -------------------------------------------------------------------

async function exportAll() {
  const status = $("export-status");
  status.textContent = "Preparing the export…";
  const response = await api("/export");
  if (!response.ok) {
    status.textContent = `Export failed: ${await detail(response)}`;
    return;
  }
  const blob = await response.blob();
  const lines = (await blob.text()).split("\n").filter((l) => l.trim()).length;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `memories-${new Date().toISOString().slice(0, 10)}.ndjson`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  status.textContent = `Exported ${lines} memories.`;
}

async function importFile(event) {
  event.preventDefault();
  const file = $("import-file").files[0];
  const status = $("import-status");
  const progress = $("import-progress");
  if (!file) return;
  status.textContent = `Reading ${file.name}…`;
  progress.hidden = true;
  let parsed;
  try {
    parsed = itemsFromFile(await file.text());
  } catch (error) {
    status.textContent = error instanceof ImportError ? error.message : `Cannot read the file: ${error}`;
    return;
  }
  const { items, skipped } = parsed;
  progress.max = Math.max(items.length, 1);
  progress.value = 0;
  progress.hidden = false;
  let stored = 0;
  let refusedCount = 0;
  const reasons = new Set();
  for (let start = 0; start < items.length; start += BATCH_SIZE) {
    const batch = items.slice(start, start + BATCH_SIZE);
    let response;
    for (;;) {
      response = await api("/memories/batch", { method: "POST", body: { items: batch } });
      if (response.status !== 429 && response.status !== 503) break;
      const wait = Number(response.headers.get("Retry-After")) || 2;
      status.textContent = `The server is busy; continuing in ${wait} s…`;
      await sleep(wait * 1000);
    }
    if (!response.ok) {
      status.textContent = `Import stopped after ${start} of ${items.length}: ${await detail(response)}`;
      return;
    }
    const { results } = await response.json();
    // Each item is stored, already present (an earlier import) or refused with its reason.
    for (const result of results) {
      if (result.status === "refused") {
        refusedCount += 1;
        if (result.reason) reasons.add(result.reason);
      } else {
        stored += 1;
      }
    }
    progress.value = start + batch.length;
    status.textContent = `Imported ${start + batch.length} of ${items.length} messages…`;
  }
  const notes = [];
  if (refusedCount) notes.push(`${refusedCount} refused (${[...reasons].join("; ")})`);
  if (skipped.length) notes.push(`${skipped.length} skipped (${[...new Set(skipped)].join(", ")})`);
  status.textContent = `Imported ${stored} of ${items.length} messages${notes.length ? `; ${notes.join("; ")}` : ""}.`;
  await resetTimeline();
  loadOverview();
}

// --- overview ----------------------------------------------------------------------------

// From the server's counts (GET /memories/stats): what it costs does not grow with the
// number of memories, so it is drawn again after every change.
async function loadOverview() {
  let stats;
  try {
    const params = new URLSearchParams({
      days: String(CHART_DAYS),
      utc_offset: String(-new Date().getTimezoneOffset()),
    });
    const response = await api(`/memories/stats?${params}`);
    if (!response.ok) {
      $("overview-total").textContent = `Could not count memories: ${await detail(response)}`;
      return;
    }
    stats = await response.json();
  } catch (error) {
    if (error instanceof SignedOut) return;
    throw error;
  }
  $("overview-total").textContent = `${stats.total} memories in all.`;
  const rows = stats.providers.map(({ provider, count }) => {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = provider;
    const value = document.createElement("td");
    value.textContent = String(count);
    row.append(name, value);
    return row;
  });
  $("providers").tBodies[0].replaceChildren(...rows);
  const providers = stats.providers.map((p) => p.provider);
  const select = $("provider");
  const chosen = select.value;
  select.replaceChildren(new Option("Any", ""), ...[...providers].sort().map((p) => new Option(p, p)));
  select.value = providers.includes(chosen) ? chosen : "";
  drawPerDay(stats.per_day);
  if (state.claims?.app_metadata?.role === "admin") loadAdminStats();
}

// perDay: [{day: "YYYY-MM-DD", count}], oldest first, days as this browser counts them.
function drawPerDay(perDay) {
  const most = Math.max(1, ...perDay.map((d) => d.count));
  const svg = $("per-day");
  const ns = "http://www.w3.org/2000/svg";
  const width = 300 / perDay.length;
  svg.replaceChildren(
    ...perDay.map(({ day, count }, i) => {
      const bar = document.createElementNS(ns, "rect");
      const height = (count / most) * 96;
      bar.setAttribute("x", String(i * width + 1));
      bar.setAttribute("y", String(100 - height));
      bar.setAttribute("width", String(width - 2));
      bar.setAttribute("height", String(height));
      const title = document.createElementNS(ns, "title");
      title.textContent = `${day}: ${count}`;
      bar.append(title);
      return bar;
    }),
  );
  const busiest = perDay.reduce((a, b) => (b.count > a.count ? b : a));
  const recent = perDay.reduce((sum, d) => sum + d.count, 0);
  $("per-day-summary").textContent = recent
    ? `${recent} in the last ${perDay.length} days; most on ${busiest.day} (${busiest.count}).`
    : `None in the last ${perDay.length} days.`;
}

async function loadAdminStats() {
  const response = await api("/admin/stats");
  if (!response.ok) return;
  const stats = await response.json();
  const labels = {
    total_memories: "Memories (all users)",
    users: "Users",
    collection: "Collection",
    model: "Model",
    dimension: "Dimension",
    backend: "Store",
  };
  const entries = Object.entries(labels).flatMap(([key, label]) => {
    const term = document.createElement("dt");
    term.textContent = label;
    const value = document.createElement("dd");
    value.textContent = String(stats[key]);
    return [term, value];
  });
  $("admin-stats").replaceChildren(...entries);
  $("admin").hidden = false;
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
    $("token").value = "";
  });
  $("sign-out").addEventListener("click", () => {
    notify("");
    showSignIn("You are signed out.");
  });
  $("search-form").addEventListener("submit", search);
  $("search-clear").addEventListener("click", () => {
    $("search-form").reset();
    $("results").replaceChildren();
    $("search-status").textContent = "";
    $("query").focus();
  });
  $("load-more").addEventListener("click", loadMore);
  // Infinite scroll: the next page loads as the button comes into view.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.token) loadMore();
  }).observe($("load-more"));
  $("export").addEventListener("click", exportAll);
  $("import-form").addEventListener("submit", importFile);
  $("delete-all").addEventListener("click", removeAll);
  $("delete-all-phrase").addEventListener("input", (event) => {
    $("delete-all-confirm").disabled = event.target.value.trim().toLowerCase() !== DELETE_ALL_PHRASE;
  });
}

// What became of a sign-in link in the fragment: "none" (no link there), "handled" (taken,
// refused or ignored) or "declined" (the person said no).
async function fromFragment() {
  const { token, error } = takeTokenFromFragment();
  if (!token && !error) return "none";
  if (state.token) {
    // Signed in: a link never swaps the session under the person.
    notify("A sign-in link was ignored: this page is already signed in. Sign out first to use it.");
    return "handled";
  }
  if (error) showSignIn(`Sign-in failed: ${error}`);
  else if (await confirmedByPerson(token)) await signIn(token);
  else return "declined";
  return "handled";
}

async function main() {
  wire();
  offerSupabase();
  // A sign-in link opened in a tab already showing the page changes only the fragment.
  window.addEventListener("hashchange", async () => {
    if ((await fromFragment()) === "declined") showSignIn("Sign-in cancelled.");
  });
  if ((await fromFragment()) === "handled") return;
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) await signIn(stored);
  else showSignIn("");
}

main();
