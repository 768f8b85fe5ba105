// Drives mcptap's dashboard in real headless Chromium (Debian's
// /usr/bin/chromium, through playwright-core) and reports what the page
// shows, so that the end-to-end test can compare it with the agent's events.
//
// Usage: node dashboard.mjs PLAN_JSON
//   {"url": "http://127.0.0.1:PORT", "token": "...", "shots": "/dir",
//    "drill_tool": "refuse",               // the tools row to drill into
//    "tail_ready": "/path",                // created once the live tail is connected
//    "tail_tool": "echo", "tail_count": 3} // then wait for these in the tail
//
// Output (last stdout line): JSON with the headline per window, the ranked
// rows, the chart's totals, the drilled calls, the opened event and the
// live tail, plus what the page says without the token.
import { writeFileSync } from "node:fs";
import { launch } from "./browser.mjs";

const plan = JSON.parse(process.argv[2]);
const TIMEOUT = 30_000;

const browser = await launch();
const report = {};
try {
  // Without the token, the page must say it is unauthorized, and show nothing.
  {
    const page = await browser.newPage();
    await page.goto(plan.url + "/");
    const error = page.getByTestId("error");
    await error.waitFor({ timeout: TIMEOUT });
    report.without_token = await error.textContent();
    report.without_token_calls = await page.getByTestId("headline-15m").locator('[data-field="calls"]').textContent();
    await page.close();
  }

  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  await page.goto(`${plan.url}/#token=${encodeURIComponent(plan.token)}`);
  // The fragment is dropped from the address once read (kept in this tab).
  await page.waitForFunction(() => !window.location.hash.includes("token"), null, { timeout: TIMEOUT });
  report.url_after_load = page.url();
  const tail = page.getByTestId("tail-panel");
  await page.waitForSelector('[data-testid="tail-panel"][data-connected="true"]', { timeout: TIMEOUT });
  await page.waitForFunction(
    () => document.querySelector('[data-testid="headline-7d"] [data-field="calls"]')?.textContent !== "…",
    null,
    { timeout: TIMEOUT },
  );
  // Let the rankings of the first summary render.
  await page.getByTestId("rank-tool-row").first().waitFor({ timeout: TIMEOUT });

  report.headline = {};
  for (const w of ["15m", "24h", "7d"]) {
    const card = page.getByTestId(`headline-${w}`);
    const field = async (f) => (await card.locator(`[data-field="${f}"]`).textContent()).trim();
    report.headline[w] = {
      calls: await field("calls"),
      clients: await field("clients"),
      servers: await field("servers"),
      error_rate: await field("error_rate"),
    };
  }
  report.ranks = {};
  for (const d of ["tool", "client", "server", "user"]) {
    report.ranks[d] = await page.getByTestId(`rank-${d}-row`).evaluateAll((rows) =>
      rows.map((r) => ({
        name: r.dataset.name,
        calls: r.querySelector('[data-field="calls"]').textContent,
        errors: r.querySelector('[data-field="errors"]').textContent,
        error_rate: r.querySelector('[data-field="error_rate"]').textContent,
        cells: [...r.querySelectorAll("td")].map((td) => td.textContent),
      })),
    );
  }
  report.chart_total = Number(await page.getByTestId("chart").getAttribute("data-total"));
  report.legend = await page.locator('[data-testid^="legend-"]').allTextContents();
  await page.screenshot({ path: `${plan.shots}/dashboard-overview.png`, fullPage: true });

  // Drill down: tools row → its calls → one call's full event.
  await page.locator(`[data-testid="rank-tool-row"][data-name="${plan.drill_tool}"]`).click();
  await page.getByTestId("filter-tool").waitFor({ timeout: TIMEOUT });
  await page.getByTestId("calls-row").first().waitFor({ timeout: TIMEOUT });
  report.drill = {
    filter: (await page.getByTestId("filter-tool").textContent()).trim(),
    calls: await page.getByTestId("calls-row").evaluateAll((rows) =>
      rows.map((r) => ({ id: r.dataset.id, cells: [...r.querySelectorAll("td")].map((td) => td.textContent) })),
    ),
    headline_15m_calls: (
      await page.getByTestId("headline-15m").locator('[data-field="calls"]').textContent()
    ).trim(),
    tool_rows: await page.getByTestId("rank-tool-row").evaluateAll((rows) => rows.map((r) => r.dataset.name)),
  };
  await page.screenshot({ path: `${plan.shots}/dashboard-drill.png`, fullPage: true });
  await page.getByTestId("calls-row").first().click();
  const json = page.getByTestId("event-json");
  await json.waitFor({ timeout: TIMEOUT });
  report.event = JSON.parse(await json.textContent());
  report.event_summary = await page.getByTestId("event-summary").locator("tr").evaluateAll((rows) =>
    Object.fromEntries(rows.map((r) => [r.querySelector("th").textContent, r.querySelector("td").textContent])),
  );
  await page.getByTestId("event").screenshot({ path: `${plan.shots}/dashboard-event.png` });
  await page.getByTestId("event-close").click();
  await page.getByTestId("filters-clear").click();

  // Live tail: tell the test we are connected, then wait for its calls.
  writeFileSync(plan.tail_ready, "");
  await page.waitForFunction(
    ({ tool, count }) =>
      [...document.querySelectorAll('[data-testid="tail-row"]')].filter((r) => r.children[2]?.textContent === tool)
        .length >= count,
    { tool: plan.tail_tool, count: plan.tail_count },
    { timeout: TIMEOUT },
  );
  report.tail = await page.getByTestId("tail-row").evaluateAll((rows) =>
    rows.map((r) => ({ id: r.dataset.id, cells: [...r.querySelectorAll("td")].map((td) => td.textContent) })),
  );
  await tail.screenshot({ path: `${plan.shots}/dashboard-tail.png` });
} catch (err) {
  console.error(err);
  const pages = browser.contexts().flatMap((c) => c.pages());
  if (pages.length) await pages[pages.length - 1].screenshot({ path: `${plan.shots}/dashboard-failure.png`, fullPage: true });
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(report));
