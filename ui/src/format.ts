export const fmtCount = (n: number) => n.toLocaleString("en-US");
export const fmtRate = (r: number) => `${(r * 100).toFixed(1)}%`;
export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}
export const fmtTime = (ms: number) => new Date(ms).toISOString().replace("T", " ").slice(0, 23);

/** One colour per status, shared by the chart, its legend and the tables. */
export const STATUS_COLOURS: Record<string, string> = {
  ok: "#2f9e44",
  tool_error: "#f59f00",
  error: "#e03131",
  cancelled: "#868e96",
  timeout: "#7048e8",
  server_exited: "#a0522d",
};
export const statusColour = (s: string | null) => STATUS_COLOURS[s ?? ""] ?? "#495057";
