// Drives the hookbridge console in headless chromium (Debian's, through
// playwright-core) for tests/it/console.rs. The test sends one command per
// line on stdin; each is done in the browser and answered with one line
// "ok <command> <json>" on stdout (or the process exits non-zero saying
// why). Every page visited is saved as <SHOTS>/<name>.png.
//
//   node tools/browser/console.mjs BASE_URL ADMIN_TOKEN SHOTS_DIR
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, token, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.HB_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-background-networking"],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 860 } });
const page = await context.newPage();
page.on("console", (m) => process.stderr.write(`page: ${m.text()}\n`));
page.on("dialog", (d) => d.accept());

const fail = (why) => {
  throw new Error(why);
};
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const text = () => page.locator("main").innerText();
/** Reloads `url` until `check(main text)` holds, within `ms`. */
async function until(url, check, what, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    await page.goto(url);
    const body = await text();
    if (check(body)) return body;
    if (Date.now() > deadline) fail(`${what}: not seen within ${ms} ms; the page says:\n${body}`);
    await page.waitForTimeout(300);
  }
}
const row = (name) => page.locator(`tr[data-subscriber="${name}"]`);

const steps = {
  // A wrong token is refused, with a message, and no session.
  async "login-wrong"() {
    const response = await page.goto(`${base}/console/`);
    if (!page.url().endsWith("/console/login")) fail(`not sent to the sign-in page: ${page.url()} (${response.status()})`);
    await page.getByLabel("Admin token").fill("not-the-token-at-all");
    const [answer] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/console/login")), page.getByRole("button", { name: "Sign in" }).click()]);
    if (answer.status() !== 401) fail(`a wrong token answered ${answer.status()}`);
    const alert = await page.getByRole("alert").innerText();
    if (!alert.includes("not the admin token")) fail(`no refusal shown: ${alert}`);
    await shot("sign-in-refused");
    if ((await context.cookies()).some((c) => c.name === "hookbridge_console")) fail("a session cookie after a wrong token");
    return { status: answer.status() };
  },
  async login() {
    await page.goto(`${base}/console/login`);
    await shot("sign-in");
    // By keyboard: the field has focus, Enter submits.
    await page.keyboard.type(token);
    await page.keyboard.press("Enter");
    await page.waitForURL(`${base}/console/`);
    const cookie = (await context.cookies()).find((c) => c.name === "hookbridge_console");
    if (!cookie) fail("no session cookie");
    if (!cookie.httpOnly || cookie.sameSite !== "Strict") fail(`cookie not HttpOnly/SameSite=Strict: ${JSON.stringify(cookie)}`);
    if (await page.evaluate(() => document.cookie.includes("hookbridge_console"))) fail("the page's script can read the session cookie");
    return { cookie: `${cookie.name}=${cookie.value}` };
  },
  async overview() {
    const body = await until(`${base}/console/`, (t) => t.includes("Deliveries per second") && t.includes("failing"), "the overview's charts", 30000);
    await shot("overview");
    const lines = await page.locator("figure.chart polyline").count();
    if (lines < 2) fail(`the overview draws ${lines} lines: ${body}`);
    return { charts: await page.locator("figure.chart").count(), lines };
  },
  async circuit() {
    const deadline = Date.now() + 20000;
    for (;;) {
      await page.goto(`${base}/console/subscribers`);
      const state = await row("failing").locator(".state").innerText();
      // The delivery record is written a moment after the attempt.
      if (state === "circuit open" && (await row("failing").innerText()).includes("HTTP 500")) break;
      if (Date.now() > deadline) fail(`the failing subscriber's state stayed ${state}`);
      await page.waitForTimeout(200);
    }
    const lastError = await row("failing").innerText();
    await shot("subscribers-circuit-open");
    return { row: lastError };
  },
  async attempt() {
    await until(`${base}/console/attempts?subscriber=failing&status=failed`, (t) => t.includes("retry scheduled") || t.includes("dead lettered"), "failed attempts");
    const details = page.locator("table.attempts details").first();
    await details.locator("summary").click();
    const excerpt = await details.locator("pre.response").innerText();
    if (!excerpt.includes("database is down")) fail(`the response excerpt: ${excerpt}`);
    await shot("attempts-failed");
    return { excerpt };
  },
  async "dead-letter-replay"() {
    await until(`${base}/console/dead-letters?subscriber=failing`, (t) => t.includes("1 dead letters kept"), "the dead letter");
    await shot("dead-letters");
    await page.locator('input[type="checkbox"][name="id"]').first().check();
    await page.getByRole("button", { name: "Replay selected" }).click();
    const status = await page.getByRole("status").innerText();
    if (!status.includes("1 dead letters handed back")) fail(`after replay: ${status}`);
    return { status };
  },
  async delivered(id) {
    await until(`${base}/console/attempts?subscriber=failing&event=${encodeURIComponent(id)}`, (t) => t.includes("delivered"), "the replayed delivery", 30000);
    await shot("attempts-after-replay");
    await page.goto(`${base}/console/events/${encodeURIComponent(id)}`);
    const body = await text();
    if (!body.includes("delivered") || !body.includes('"specversion"')) fail(`the event page: ${body}`);
    await shot("event");
    return {};
  },
  async "disable-enable"() {
    await page.goto(`${base}/console/subscribers`);
    await row("crm").getByRole("button", { name: "Disable crm" }).click();
    if ((await row("crm").locator(".state").innerText()) !== "disabled") fail("crm not shown disabled");
    await shot("subscriber-disabled");
    await row("crm").getByRole("button", { name: "Enable crm" }).click();
    const state = await row("crm").locator(".state").innerText();
    if (state !== "healthy") fail(`crm after enable: ${state}`);
    return { state };
  },
  // Posts the disable form without (and with a wrong) CSRF token, from the page itself.
  async csrf() {
    await page.goto(`${base}/console/subscribers`);
    const statuses = await page.evaluate(async () => {
      const post = (body) => fetch("/console/subscribers/crm/disable", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body, redirect: "manual" }).then((r) => r.status);
      return [await post(""), await post("csrf=0123456789abcdef")];
    });
    await page.goto(`${base}/console/subscribers`);
    return { statuses, state: await row("crm").locator(".state").innerText() };
  },
  async pages() {
    await until(`${base}/console/events`, (t) => t.includes("email.bounced"), "the events list");
    await shot("events");
    await page.goto(`${base}/console/events?type=email.bounced`);
    if ((await page.locator("tbody tr").count()) < 1) fail("no bounced event listed");
    await page.goto(`${base}/console/sources`);
    const mailpipe = await page.locator('tr[data-source="mailpipe"]').innerText();
    if (!mailpipe.includes("unauthorized")) fail(`the sources page does not show the forged webhook: ${mailpipe}`);
    await shot("sources");
    await page.goto(`${base}/console/replay`);
    await shot("replay-form");
    await page.getByLabel("Subscriber").selectOption("crm");
    await page.getByRole("button", { name: "Start the replay" }).click();
    await page.waitForURL(/\/console\/replays\//);
    const deadline = Date.now() + 30000;
    while (!(await page.getByRole("status").innerText()).startsWith("Done")) {
      if (Date.now() > deadline) fail("the replay did not finish");
      await page.waitForTimeout(500);
      await page.reload();
    }
    await shot("replay-done");
    return { replay: await page.getByRole("status").innerText() };
  },
  async "tail-open"() {
    await page.goto(`${base}/console/tail`);
    await page.waitForFunction(() => document.getElementById("tail-status").textContent.startsWith("Connected"), null, { timeout: 15000 });
    return {};
  },
  async "tail-wait"() {
    await page.waitForFunction(() => document.querySelectorAll("#tail li").length >= 1, null, { timeout: 20000 });
    await shot("live-tail");
    return { first: await page.locator("#tail li").first().innerText() };
  },
  async logout() {
    await page.goto(`${base}/console/`);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(`${base}/console/login`);
    await page.goto(`${base}/console/subscribers`);
    if (!page.url().endsWith("/console/login")) fail(`still signed in: ${page.url()}`);
    return {};
  },
};

try {
  console.log("ready");
  for await (const line of createInterface({ input: process.stdin })) {
    const [command, ...args] = line.trim().split(" ");
    if (command === "quit") break;
    const step = steps[command];
    if (!step) fail(`unknown command ${command}`);
    const result = await step(...args);
    console.log(`ok ${command} ${JSON.stringify(result)}`);
  }
} catch (error) {
  await shot("failure").catch(() => {});
  console.log(`failed ${error.message.replaceAll("\n", " | ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.exit(process.exitCode ?? 0);
