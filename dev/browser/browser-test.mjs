// The browser test (make browser-test): the local stack's page and a page
// of another origin, driven in headless Chromium (Debian's /usr/bin/chromium)
// through playwright-core.
//
// It starts bin/rcmstack on free ports with a fresh data dir, with the
// test's own page origin added to the gateway's CORS origins, then:
//   - on the stack's page: signs in with a development token, sees the
//     stream go live, starts a campaign and records an opt-out on a seeded
//     document, sees both items arrive in the activity list, sees the log
//     verify and a checkpoint of both entries cosigned by the witness, and
//     reads the document's consent and contact attempts;
//   - on a page the test serves on another port (an allowed origin): mints
//     a stream ticket with the Bearer token, opens an EventSource with it,
//     receives an item as it happens, and sees the same ticket refused a
//     second time; with Clerk's __session cookie, reads and opens the
//     stream with credentials, and a command is refused;
//   - on a page of an origin not on the list: the browser keeps the
//     gateway's answer from it;
//   - on the stack's page again: its stream broken, it mints another
//     ticket and resumes after its last event, with what happened
//     meanwhile listed once and nothing twice; no page logged an error.
// It writes screenshots of both pages under bin/browser-test/ and prints
// their paths. Any failure exits non-zero with what was expected and what
// was seen, and keeps the run's directory (the services' logs).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const chromiumPath = "/usr/bin/chromium";
const rcmstack = path.join(repo, "bin", "rcmstack");
// The screenshots go under bin/ (ignored by git), which outlives the run's
// temporary directory.
const shotDir = path.join(repo, "bin", "browser-test");
const seconds = (n) => n * 1000;
// The machine may be shared and slow: generous deadlines, each polled.
const stackDeadline = seconds(300);
const stepDeadline = seconds(60);

const tmp = mkdtempSync(path.join(os.tmpdir(), "rcm-browser-"));
let stack = null, stackExited = null, browser = null;
const servers = [];
let passed = 0;

class Failure extends Error {}

function fail(msg) { throw new Failure(msg); }

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (err) {
    err.step = name;
    throw err;
  }
  passed++;
  console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// poll calls check until it returns a truthy value or the deadline
// passes; then it fails with what the last call saw.
async function poll(what, deadline, check) {
  const end = Date.now() + deadline;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = "not yet";
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > end) fail(`${what}: not within ${deadline / 1000} s (last: ${last})`);
    if (stackExited) fail(`${what}: rcmstack exited (${stackExited})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// The test's own pages: the same small page served on two ports, one
// whose origin the gateway allows and one it does not. It reads the
// gateway's URL and a token from its fragment, mints a stream ticket with
// fetch and the Bearer token, opens an EventSource with the ticket, lists
// the items it receives, then opens a second EventSource with the same
// ticket, which must be refused.
const crossPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>another origin</title><link rel="icon" href="data:,"></head>
<body>
<h1>A page of another origin</h1>
<p>ticket: <span id="ticket">(none)</span> stream: <span id="status">(closed)</span> reuse: <span id="reuse">(untried)</span></p>
<ol id="items"></ol>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const p = new URLSearchParams(location.hash.slice(1));
const gw = p.get("gateway"), token = p.get("token");
const types = ["campaign_started", "opt_out", "campaign_ended", "consent_changed",
  "contact_attempted", "contact_blocked", "contact_outcome"];
(async () => {
  let r;
  try {
    r = await fetch(gw + "/v1/activity/stream-tickets", { method: "POST", headers: { Authorization: "Bearer " + token } });
  } catch (err) {
    $("ticket").textContent = "blocked: " + err.name;
    return;
  }
  if (r.status !== 201) { $("ticket").textContent = "refused: " + r.status; return; }
  const { ticket } = await r.json();
  $("ticket").textContent = "minted";
  const url = gw + "/v1/activity/stream?ticket=" + encodeURIComponent(ticket);
  const es = new EventSource(url);
  es.onerror = () => { $("status").textContent = "error, readyState " + es.readyState; es.close(); };
  for (const t of types) {
    es.addEventListener(t, (ev) => {
      const item = JSON.parse(ev.data);
      const li = document.createElement("li");
      li.dataset.type = item.type;
      li.dataset.document = item.documentId;
      li.textContent = item.type + " " + item.documentId + " " + item.summary;
      $("items").append(li);
    });
  }
  es.onopen = () => {
    $("status").textContent = "live";
    const again = new EventSource(url);
    again.onopen = () => { $("reuse").textContent = "opened"; again.close(); };
    again.onerror = () => { $("reuse").textContent = again.readyState === EventSource.CLOSED ? "refused" : "error"; again.close(); };
  };
})();
</script>
</body></html>`;

function serveCrossPage() {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      if (req.method === "GET" && req.url === "/") {
        res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
        res.end(crossPage);
      } else {
        res.writeHead(404).end();
      }
    });
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      servers.push(srv);
      resolve("http://127.0.0.1:" + srv.address().port);
    });
  });
}

function logTail(file, lines = 30) {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no " + file + ")";
  }
}

async function startStack(allowedOrigin) {
  if (!existsSync(rcmstack)) fail(`${rcmstack} is missing: run make build first (make browser-test does)`);
  const ready = path.join(tmp, "ready.json");
  const out = path.join(tmp, "rcmstack.log");
  const fd = openSync(out, "a");
  stack = spawn(rcmstack, [], {
    cwd: repo,
    stdio: ["ignore", fd, fd],
    env: {
      ...process.env,
      RCM_DATA_DIR: path.join(tmp, "data"),
      RCM_BIN_DIR: path.join(repo, "bin"),
      RCM_STACK_RANDOM_PORTS: "1",
      RCM_STACK_CORS_ORIGINS: allowedOrigin,
      RCM_STACK_READY_FILE: ready,
    },
  });
  stack.on("exit", (code, signal) => { stackExited = `code ${code}, signal ${signal}; its output: ${out}`; });
  return poll("the stack to be ready", stackDeadline, () => existsSync(ready) && JSON.parse(readFileSync(ready, "utf8")));
}

async function stopStack() {
  if (!stack || stackExited) return;
  const exited = new Promise((r) => stack.once("exit", r));
  stack.kill("SIGINT");
  const timer = setTimeout(() => stack.kill("SIGKILL"), seconds(90));
  await exited;
  clearTimeout(timer);
}

async function main() {
  console.log("browser test: chromium " + chromiumPath + ", work dir " + tmp);
  if (!existsSync(chromiumPath)) fail(`${chromiumPath} is missing: make browser-test installs Debian's chromium package`);
  const allowed = await serveCrossPage();
  const refused = await serveCrossPage();
  let cfg;
  await step("the stack starts on free ports, allowing " + allowed, async () => {
    cfg = await startStack(allowed);
    console.log(`     page ${cfg.page}, gateway ${cfg.gateway}, logs ${cfg.logs}`);
  });

  browser = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
    executablePath: chromiumPath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
  });
  const problems = [];
  const watch = (page, name) => {
    page.on("pageerror", (err) => problems.push(`${name}: uncaught ${err.message}`));
    page.on("console", (msg) => { if (msg.type() === "error") problems.push(`${name}: console error: ${msg.text()} (${msg.location().url})`); });
  };
  const page = browser.pages()[0] || await browser.newPage();
  watch(page, "the stack's page");
  const text = (sel) => page.locator(sel).textContent();

  await step("the page signs in with a development token and its stream goes live", async () => {
    await page.goto(cfg.page);
    await poll("signed in as " + cfg.account, stepDeadline, async () => (await text("#whoami")) === "signed in as " + cfg.account);
    await poll("the stream live", stepDeadline, async () => (await text("#stream-status")) === "(live)");
  });

  // press clears what a button writes to, clicks it and waits for its
  // answer, so that an earlier answer is never taken for this one.
  const press = async (button, result) => {
    await page.evaluate((id) => { document.getElementById(id).textContent = ""; }, result);
    await page.click("#" + button);
    return poll(`an answer to ${button} in #${result}`, stepDeadline, async () => text("#" + result));
  };
  const status = (answer) => Number(answer.split("\n")[0]);

  const doc = "doc_demo_behind";
  let campaign;
  await step("the page starts a campaign on " + doc + " and its item arrives live", async () => {
    await page.selectOption("#document", doc);
    const answer = await press("start", "campaign-result");
    if (status(answer) !== 201) fail("the start answered " + answer.slice(0, 300));
    campaign = await page.inputValue("#campaign");
    if (!/^rcm_/.test(campaign)) fail(`the campaign id field holds ${JSON.stringify(campaign)}, want rcm_…`);
    await poll("a campaign_started item for " + doc, stepDeadline,
      async () => (await page.locator(`#activity li[data-type=campaign_started]`, { hasText: doc }).count()) === 1);
  });

  await step("the page records an opt-out of sms on " + campaign + " and its item arrives live", async () => {
    await page.selectOption("#channel", "sms");
    const answer = await press("optout", "campaign-result");
    if (status(answer) !== 200) fail("the opt-out answered " + answer.slice(0, 300));
    await poll("an opt_out item for " + doc, stepDeadline,
      async () => (await page.locator(`#activity li[data-type=opt_out]`, { hasText: doc }).count()) === 1);
  });

  await step("the page verifies the log (both entries) and sees a checkpoint of both cosigned by the witness", async () => {
    await poll("verified with 2 entries", stepDeadline, async () => {
      await press("verify", "verify-result");
      const cls = await page.getAttribute("#verify-result", "class");
      const shown = await text("#verify-result");
      if (cls !== "ok") fail("the page shows " + shown + ": " + (await text("#log-result")).slice(0, 300));
      const m = /^verified: (\d+) entries$/.exec(shown);
      return m && Number(m[1]) === 2;
    });
    // The checkpoint follows the log within seconds.
    await poll("a checkpoint of 2 entries cosigned", stepDeadline, async () =>
      (await press("checkpoint", "witness-status")) === "checkpoint of 2 entries: cosigned by the witness");
  });

  await step("the page reads " + doc + "'s consent and contact attempts", async () => {
    for (const id of ["consent", "attempts"]) {
      const answer = await press(id, "document-result");
      if (status(answer) !== 200) fail(`${id} answered ${answer.slice(0, 300)}`);
    }
  });

  const other = "doc_demo_ma";
  let token, cross, otherCampaign;
  await step("a page of " + allowed + " opens the stream with a ticket and receives an item; the ticket's reuse is refused", async () => {
    const resp = await fetch(cfg.page + "/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sub: cfg.account }) });
    token = (await resp.json()).token;
    if (!token) fail("the stack's page minted no token: " + resp.status);
    cross = await browser.newPage();
    watch(cross, "the page of " + allowed);
    // The refused reuse and the refused command are 401s Chromium logs on
    // the console: expected.
    cross.removeAllListeners("console");
    cross.on("console", (msg) => {
      if (msg.type() === "error" && !/401 \(Unauthorized\)/.test(msg.text())) {
        problems.push(`the page of ${allowed}: console error: ${msg.text()} (${msg.location().url})`);
      }
    });
    await cross.goto(allowed + "/#" + new URLSearchParams({ gateway: cfg.gateway, token }));
    await poll("its stream live", stepDeadline, async () => {
      const s = await cross.locator("#status").textContent();
      if (s.startsWith("error")) fail("its stream failed: " + s + ", ticket " + (await cross.locator("#ticket").textContent()));
      return s === "live";
    });
    // An item made after the stream opened (from here, not the browser).
    const start = await fetch(cfg.gateway + "/v1/documents/" + other + "/rcm", {
      method: "POST", headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify({ sms: true, email: false, call: false, tone: "professional and empathetic", cadence: "day 1" }),
    });
    if (start.status !== 201) fail(`start on ${other}: ${start.status} ${await start.text()}`);
    otherCampaign = (await start.json()).campaign.id;
    await poll("a campaign_started item for " + other + " on that page", stepDeadline,
      async () => (await cross.locator(`#items li[data-type=campaign_started][data-document=${other}]`).count()) === 1);
    await poll("the ticket's reuse refused", stepDeadline, async () => {
      const r = await cross.locator("#reuse").textContent();
      if (r === "opened") fail("a second EventSource opened with the same ticket");
      return r === "refused";
    });
    await cross.screenshot({ path: path.join(shotDir, "cross-origin.png"), fullPage: true });
  });

  await step("the same page with Clerk's __session cookie: reads and the stream with credentials, a command refused", async () => {
    // Cookies are per host, not per port: one set on this page travels to
    // the gateway on 127.0.0.1 too, as on a front-end and its API of one
    // site.
    const got = await cross.evaluate(async ({ gw, token }) => {
      document.cookie = "__session=" + token + "; path=/; SameSite=Lax";
      try {
        const read = await fetch(gw + "/v1/activity", { credentials: "include" });
        const command = await fetch(gw + "/v1/documents/doc_demo_behind/rcm", { method: "POST", credentials: "include",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ sms: true, email: false, call: false, tone: "t", cadence: "c" }) });
        const stream = await new Promise((resolve) => {
          const es = new EventSource(gw + "/v1/activity/stream", { withCredentials: true });
          es.onopen = () => { es.close(); resolve("open"); };
          es.onerror = () => { es.close(); resolve("error"); };
        });
        return { read: read.status, command: command.status, commandBody: await command.text(), stream };
      } finally {
        document.cookie = "__session=; path=/; max-age=0";
      }
    }, { gw: cfg.gateway, token });
    if (got.read !== 200) fail(`GET /v1/activity with the cookie: ${got.read}, want 200`);
    if (got.stream !== "open") fail(`the stream with the cookie: ${got.stream}, want open`);
    if (got.command !== 401 || !got.commandBody.includes("Missing Authorization Bearer token.")) {
      fail(`a POST with only the cookie: ${got.command} ${got.commandBody}, want 401 Missing Authorization Bearer token.`);
    }
    await cross.close();
  });

  await step("a page of " + refused + ", not on the list, is refused the gateway's answer", async () => {
    const blocked = await browser.newPage();
    await blocked.goto(refused + "/#" + new URLSearchParams({ gateway: cfg.gateway, token: "unused" }));
    await poll("its fetch blocked", stepDeadline, async () => (await blocked.locator("#ticket").textContent()).startsWith("blocked"));
    await blocked.close();
  });

  await step("the stack's page shows that item too", async () => {
    await poll("a campaign_started item for " + other, stepDeadline,
      async () => (await page.locator(`#activity li[data-type=campaign_started]`, { hasText: other }).count()) === 1);
  });

  await step("the stack's page, its stream broken, resumes after its last event: what happened meanwhile once, nothing twice", async () => {
    // The page's new ticket is held until an opt-out made while it is
    // disconnected is in the feed's history, so the item can only come
    // from the resume.
    let release;
    const held = new Promise((r) => { release = r; });
    await page.route(cfg.gateway + "/v1/activity/stream-tickets", async (route) => {
      if (route.request().method() === "POST") await held;
      await route.continue();
    });
    const before = await page.locator("#activity li").count();
    // What EventSource does when its connection drops: the page's handler
    // cannot tell this from a real error.
    await page.evaluate(() => source.dispatchEvent(new Event("error")));
    await poll("the page reconnecting", stepDeadline, async () => (await text("#stream-status")) !== "(live)");
    const optOut = await fetch(cfg.gateway + "/v1/documents/" + other + "/rcm/opt-out", {
      method: "POST", headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify({ campaignId: otherCampaign, channel: "all" }),
    });
    if (optOut.status !== 200) fail(`opt-out on ${other}: ${optOut.status} ${await optOut.text()}`);
    await poll("the opt-out in the feed's history", stepDeadline, async () => {
      const r = await fetch(cfg.gateway + "/v1/activity", { headers: { Authorization: "Bearer " + token } });
      const body = await r.json();
      return (body.items || []).some((it) => it.type === "opt_out" && it.documentId === other);
    });
    release();
    await poll("the stream live again", stepDeadline, async () => (await text("#stream-status")) === "(live)");
    await poll("the opt-out on " + other + " in the list", stepDeadline,
      async () => (await page.locator(`#activity li[data-type=opt_out]`, { hasText: other }).count()) === 1);
    const after = await page.locator("#activity li").count();
    if (after !== before + 1) fail(`the list holds ${after} items after the resume, want ${before + 1}: ${await text("#activity")}`);
    await page.unroute(cfg.gateway + "/v1/activity/stream-tickets");
  });

  await step("nothing went wrong on the pages (no uncaught error, no console error)", async () => {
    if (problems.length) fail(problems.join("\n"));
  });

  const shot = path.join(shotDir, "devpage.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log("screenshot of the stack's page: " + shot);
  console.log("screenshot of the other origin's page: " + path.join(shotDir, "cross-origin.png"));
}

let status = 0;
mkdirSync(shotDir, { recursive: true });
rmSync(path.join(shotDir, "devpage-failed.png"), { force: true });
try {
  await main();
} catch (err) {
  status = 1;
  console.error(`FAIL ${err.step || "set-up"}: ${err instanceof Failure ? err.message : err.stack}`);
  console.error("rcmstack's output (last lines):\n" + logTail(path.join(tmp, "rcmstack.log")));
  console.error("the services' logs are kept in " + path.join(tmp, "data", "logs"));
}
try {
  if (browser && status !== 0) {
    const page = browser.pages()[0];
    if (page) {
      const shot = path.join(shotDir, "devpage-failed.png");
      await page.screenshot({ path: shot, fullPage: true }).then(() => console.error("screenshot at the failure: " + shot), () => {});
    }
  }
  if (browser) await browser.close();
} catch (err) {
  console.error("closing the browser: " + err.message);
}
await stopStack();
for (const s of servers) s.close();
if (status === 0) rmSync(tmp, { recursive: true, force: true });
console.log(`browser test: ${passed} passed, ${status} failed`);
process.exit(status);
