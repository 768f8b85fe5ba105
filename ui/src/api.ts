// The agent's local API (agent/src/api): the same origin that serves this
// page. When the agent requires a token (dashboard bound to a non-loopback
// address), open the page as http://HOST:PORT/#token=... : the token stays
// in the fragment (never sent in a request line or logged), then in this
// tab's sessionStorage.

export type Window = "15m" | "1h" | "24h" | "7d";
export const WINDOWS: Window[] = ["15m", "1h", "24h", "7d"];

export interface Rank {
  name: string;
  calls: number;
  errors: number;
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
  cpu_s: number;
  effects: number;
}

export interface Summary {
  window: string;
  from_ms: number;
  to_ms: number;
  calls: number;
  errors: number;
  error_rate: number;
  clients: number;
  servers: number;
  users: number;
  series: { bucket_ms: number; points: { t_ms: number; by_status: Record<string, number> }[] };
  tools: Rank[];
  clients_ranked: Rank[];
  servers_ranked: Rank[];
  users_ranked: Rank[];
}

export interface Call {
  seq: number;
  id: string;
  ts_ms: number;
  type: string;
  method: string | null;
  tool: string | null;
  server: string | null;
  client: string | null;
  user: string | null;
  status: string | null;
  duration_ms: number | null;
  observer: string | null;
  transport: string | null;
  effects: number | null;
  cpu_ms: number | null;
}

/** A server's latest tool offer against its calls (`GET /api/tools`). */
export interface ServerTools {
  server: string;
  listed_ms: number;
  tools: { name: string; digest: string; calls: number; last_called_ms?: number }[];
  unused: string[];
}

/** What a drill-down filters on: the API's query parameters. */
export type Dimension = "tool" | "client" | "server" | "user" | "status" | "effect";
export type Filters = Partial<Record<Dimension, string>>;

const TOKEN_KEY = "mcptap.token";

export function token(): string | null {
  const m = /(?:^|&)token=([^&]+)/.exec(window.location.hash.slice(1));
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== "") q.set(k, String(v));
  }
  return q.toString();
}

async function get<T>(path: string): Promise<T> {
  const t = token();
  const res = await fetch(path, { headers: t ? { Authorization: `Bearer ${t}` } : {} });
  if (!res.ok) {
    const body = await res.json().catch(() => ({ error: res.statusText }));
    throw new ApiError(res.status, body.error ?? res.statusText);
  }
  return res.json() as Promise<T>;
}

export const fetchSummary = (window: Window, f: Filters) =>
  get<Summary>(`/api/summary?${query({ window, ...f })}`);

export const fetchCalls = (window: Window, f: Filters, limit = 200) =>
  get<{ calls: Call[] }>(`/api/calls?${query({ window, limit, ...f })}`).then((r) => r.calls);

export const fetchTools = (window: Window) =>
  get<{ servers: ServerTools[] }>(`/api/tools?${query({ window })}`).then((r) => r.servers);

/** Recent alerts (policy violations, effects outside scope, spikes, drift). */
export const fetchAlerts = (window: Window, f: Filters) =>
  get<{ calls: Call[] }>(`/api/calls?${query({ window, kind: "mcp.alert", limit: 50, ...f })}`).then((r) => r.calls);

/** One event; its time (from the listing) lets the agent find it by index. */
export const fetchEvent = (id: string, ts_ms: number) =>
  get<Record<string, unknown>>(`/api/events/${encodeURIComponent(id)}?${query({ ts_ms })}`);

/** Live operations; EventSource cannot send headers, so the token goes in the query. */
export function openTail(onEvent: (e: Record<string, unknown>) => void, onLag: (n: number) => void): EventSource {
  const t = token();
  const src = new EventSource(`/api/tail?${query({ kind: "mcp.operation", token: t ?? undefined })}`);
  src.onmessage = (m) => {
    try {
      onEvent(JSON.parse(m.data));
    } catch {
      // A malformed line is the agent's bug; skip it rather than break the tail.
    }
  };
  src.addEventListener("lagged", (m) => onLag(Number((m as MessageEvent).data)));
  return src;
}

/** A field by its dotted name, flat ("mcp.method.name") or nested
 * ("server" → "name"), as the agent's own lookup does. */
export function lookup(e: unknown, path: string): unknown {
  if (e === null || typeof e !== "object") return undefined;
  const obj = e as Record<string, unknown>;
  if (path in obj) return obj[path];
  const parts = path.split(".");
  for (let i = parts.length - 1; i > 0; i--) {
    const head = parts.slice(0, i).join(".");
    if (head in obj) {
      const found = lookup(obj[head], parts.slice(i).join("."));
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** The same columns the store keeps, from a full event (live tail). */
export function callOf(e: Record<string, unknown>): Call {
  const s = (k: string) => {
    const v = lookup(e, k);
    return typeof v === "string" ? v : null;
  };
  const secs = lookup(e, "duration_s");
  return {
    seq: 0,
    id: s("event.id") ?? "",
    // Milliseconds, as the store keeps them (floored, not rounded).
    ts_ms: Date.parse((s("time") ?? "").replace(/(\.\d{3})\d+/, "$1")) || Date.now(),
    type: s("event.type") ?? "",
    method: s("mcp.method.name"),
    tool: s("gen_ai.tool.name"),
    server: s("server.name") ?? s("server.process.exe"),
    client: s("client.name") ?? s("client.app"),
    user: s("client.process.user"),
    status: s("status"),
    duration_ms: typeof secs === "number" ? secs * 1000 : null,
    observer: s("observer"),
    transport: s("network.transport"),
    effects: (() => {
      const counts = lookup(e, "mcp.effects.counts") as Record<string, number> | undefined;
      return counts ? Object.values(counts).reduce((a, b) => a + b, 0) : null;
    })(),
    cpu_ms: (() => {
      const cpu = lookup(e, "mcp.server.cpu.seconds");
      return typeof cpu === "number" ? cpu * 1000 : null;
    })(),
  };
}
