// Drives mcptap's dashboard in real headless Chromium (Debian's
// /usr/bin/chromium, through playwright-core) through what each call did on
// the host: the calls filtered by an effect kind, one call's effects table
// and its summary (identity, CPU), the alerts panel and the tools offered
// but never called. Reports what the page shows, for the end-to-end test to
// compare with the agent's events.
//
// Usage: node dashboard_effects.mjs PLAN_JSON
//   {"url": "http://127.0.0.1:PORT", "token": "...", "shots": "/dir",
//    "effect": "connect"}   // the effect kind to filter the calls by
//
// Output (last stdout line): JSON {calls, effects, summary, event, alerts,
// unused}.
import { launch } from "./browser.mjs";

const plan = JSON.parse(process.argv[2]);
const TIMEOUT = 30_000;

const browser = await launch();
const rowsOf = (locator) =>
  locator.evaluateAll((rows) =>
    rows.map((r) => ({ id: r.dataset.id, cells: [...r.querySelectorAll("td")].map((td) => td.textContent) })),
  );
const report = {};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  await page.goto(`${plan.url}/#token=${encodeURIComponent(plan.token)}`);
  await page.getByTestId("rank-tool-row").first().waitFor({ timeout: TIMEOUT });

  // Calls that had an effect of this kind, and the first one's full view.
  await page.getByTestId("filter-effect-pick").selectOption(plan.effect);
  await page.getByTestId("filter-effect").waitFor({ timeout: TIMEOUT });
  await page.getByTestId("calls-row").first().waitFor({ timeout: TIMEOUT });
  report.calls = await rowsOf(page.getByTestId("calls-row"));
  await page.getByTestId("calls-row").first().click();
  await page.getByTestId("event-json").waitFor({ timeout: TIMEOUT });
  report.event = JSON.parse(await page.getByTestId("event-json").textContent());
  report.effects = await page.getByTestId("event-effect").evaluateAll((rows) =>
    rows.map((r) => ({
      kind: r.dataset.kind,
      cells: [...r.querySelectorAll("td")].map((td) => td.textContent),
    })),
  );
  report.summary = await page.getByTestId("event-summary").locator("tr").evaluateAll((rows) =>
    Object.fromEntries(rows.map((r) => [r.querySelector("th").textContent, r.querySelector("td").textContent])),
  );
  await page.getByTestId("event").screenshot({ path: `${plan.shots}/dashboard-effects-event.png` });
  await page.getByTestId("event-close").click();

  // The alerts (under the same filter: the call's alert) and the tools
  // never called.
  await page.getByTestId("alerts-row").first().waitFor({ timeout: TIMEOUT });
  report.alerts = await rowsOf(page.getByTestId("alerts-row"));
  await page.getByTestId("unused-tools-row").first().waitFor({ timeout: TIMEOUT });
  report.unused = await page.getByTestId("unused-tools-row").evaluateAll((rows) =>
    rows.map((r) => ({ server: r.dataset.name, unused: r.querySelector('[data-field="unused"]').textContent })),
  );
  await page.screenshot({ path: `${plan.shots}/dashboard-effects.png`, fullPage: true });
} catch (err) {
  console.error(err);
  const pages = browser.contexts().flatMap((c) => c.pages());
  if (pages.length) await pages[pages.length - 1].screenshot({ path: `${plan.shots}/dashboard-effects-failure.png`, fullPage: true });
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(report));
