// Opens a page in headless chromium (Debian's, through playwright-core) and
// answers the test on stdin/stdout: prints "ready" once the page's
// EventSource is open; on "wait N" waits until the page has received N
// events and prints them as one JSON line; "quit" closes the browser.
//
//   node tools/browser/eventsource.mjs PAGE_URL
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.HB_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => process.stderr.write(`page: ${m.text()}\n`));
  await page.goto(url);
  await page.waitForFunction(() => window.opened === true, null, { timeout: 30000 });
  console.log("ready");
  for await (const line of createInterface({ input: process.stdin })) {
    const [command, n] = line.trim().split(" ");
    if (command === "wait") {
      await page.waitForFunction((n) => window.received.length >= n, Number(n), { timeout: 60000 });
      console.log(JSON.stringify(await page.evaluate(() => window.received)));
    } else if (command === "quit") {
      break;
    }
  }
} finally {
  await browser.close();
}
// stdin may still be open: leave now.
process.exit(0);
