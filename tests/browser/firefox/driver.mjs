// Drives Debian's firefox-esr with the extension installed, for the Python tests
// (tests/support/firefox.py): one JSON command per line on stdin, one JSON answer per line on
// stdout. The chat sites are stand-ins served at their real hostnames by request interception;
// the extension's background script reaches the server on loopback directly.
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const EDITOR = "[role=textbox]";
// How long an action waits for its control, or for the typed text to show.
const ACTION_MS = 15000;

let browser = null;
let sites = [];
let engine = { path: "", body: "" };
const pages = new Map();
let nextPage = 1;

function siteOf(url) {
  const { hostname, protocol } = new URL(url);
  return protocol === "https:" ? sites.find((site) => site.hosts.includes(hostname)) : undefined;
}

function serve(request) {
  const site = siteOf(request.url());
  if (!site) {
    // Nothing but the stand-ins may leave a page: no host on the internet is reached.
    request.abort("addressunreachable");
    return;
  }
  const { pathname } = new URL(request.url());
  if (pathname === engine.path) {
    request.respond({ status: 200, contentType: "application/javascript", body: engine.body });
  } else if (request.isNavigationRequest()) {
    request.respond({ status: 200, contentType: "text/html", body: site.html });
  } else {
    request.respond({ status: 404, body: "" });
  }
}

/* Until the editor shows text; else an error that says where the typing went. */
async function typed(target, text) {
  try {
    await target.waitForFunction(
      (selector, expected) => (document.querySelector(selector)?.innerText ?? "").trim() === expected,
      { timeout: ACTION_MS },
      EDITOR,
      text,
    );
  } catch {
    const seen = await target.evaluate((selector) => {
      const focus = document.activeElement;
      const label = focus && (focus.getAttribute("aria-label") || focus.getAttribute("role"));
      return {
        editor: document.querySelector(selector)?.innerText ?? null,
        focus: focus ? `${focus.tagName.toLowerCase()}${label ? ` "${label}"` : ""}` : "none",
      };
    }, EDITOR);
    throw new Error(`typed ${JSON.stringify(text)} but the editor shows ${JSON.stringify(seen.editor)}; the focus is on ${seen.focus}`);
  }
}

function page(id) {
  const found = pages.get(id);
  if (!found) throw new Error(`no page ${id}`);
  return found;
}

const commands = {
  async launch({ extension, profile, standIns, engineScript }) {
    sites = standIns;
    engine = engineScript;
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: "/usr/bin/firefox-esr",
      headless: true,
      userDataDir: profile,
    });
    return { id: await browser.installExtension(extension) };
  },
  async open({ url }) {
    const opened = await browser.newPage();
    await opened.setRequestInterception(true);
    opened.on("request", serve);
    await opened.goto(url);
    await opened.waitForSelector(EDITOR);
    const id = nextPage++;
    pages.set(id, opened);
    return { page: id };
  },
  async find({ prefix, timeoutMs }) {
    // A tab the extension opened itself (its options page): BiDi may not navigate to
    // moz-extension: addresses, nor does it report them as the page's URL.
    const until = Date.now() + timeoutMs;
    for (;;) {
      for (const candidate of await browser.pages()) {
        if ([...pages.values()].includes(candidate)) continue;
        const address = await candidate.evaluate(() => location.href).catch(() => "");
        if (address.startsWith(prefix)) {
          const id = nextPage++;
          pages.set(id, candidate);
          return { page: id, address };
        }
      }
      if (Date.now() > until) throw new Error(`no page at ${prefix}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  },
  async navigate({ page: id, url }) {
    await page(id).goto(url);
    return {};
  },
  async click({ page: id, selector }) {
    await page(id).click(selector);
    return {};
  },
  async send({ page: id, text, how, sendControl }) {
    const target = page(id);
    // Like a person, each click waits until its control is shown, enabled and still: a click
    // aimed where the editor was a moment ago lands beside it, and the typing goes nowhere.
    await target.locator(EDITOR).setTimeout(ACTION_MS).click();
    await target.keyboard.type(text);
    await typed(target, text);
    if (how === "enter") await target.keyboard.press("Enter");
    else await target.locator(sendControl).setTimeout(ACTION_MS).click();
    return {};
  },
  async evaluate({ page: id, expression }) {
    // undefined (a navigation, a statement) comes back as null.
    return { value: (await page(id).evaluate(expression)) ?? null };
  },
  async reload({ page: id }) {
    await page(id).reload();
    await page(id).waitForSelector(EDITOR);
    return {};
  },
  async close() {
    if (browser) await browser.close();
    browser = null;
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { command, ...args } = JSON.parse(line);
  let answer;
  try {
    answer = { ok: true, ...(await commands[command](args)) };
  } catch (error) {
    answer = { ok: false, error: String(error && error.stack ? error.stack : error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (command === "close") break;
}
lines.close();
if (browser) await browser.close();
process.exit(0);
