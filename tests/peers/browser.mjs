// Headless Chromium for the dashboard drivers (dashboard.mjs,
// dashboard_effects.mjs): Debian's /usr/bin/chromium through
// playwright-core. Root in CI needs --no-sandbox; the rest keep Chromium off
// the network (this machine's is closed: its background fetches would only
// fail).
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
