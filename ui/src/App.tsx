import { useCallback, useEffect, useState } from "react";
import {
  ApiError,
  Call,
  Dimension,
  Filters,
  Summary,
  WINDOWS,
  Window,
  callOf,
  fetchAlerts,
  fetchCalls,
  fetchEvent,
  fetchSummary,
  fetchTools,
  lookup,
  openTail,
} from "./api";
import { CallsChart } from "./Chart";
import { CallTable, RankTable } from "./Tables";
import { fmtCount, fmtRate } from "./format";

const REFRESH_MS = 5000;
const HEADLINE_WINDOWS: { window: Window; label: string }[] = [
  { window: "15m", label: "15 min" },
  { window: "24h", label: "24 h" },
  { window: "7d", label: "7 d" },
];
const TAIL_KEEP = 50;
/** Side-effect kinds a drill-down can filter on (`mcp.effects`). */
const EFFECT_KINDS = ["file_read", "file_write", "file_delete", "file_rename", "exec", "connect", "listen"];

/** Refetches `load` now, whenever its inputs change, and every REFRESH_MS. */
function usePolling<T>(load: () => Promise<T>, deps: unknown[]): { data: T | null; error: string | null } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    const run = () =>
      load().then(
        (d) => live && (setData(d), setError(null)),
        (e: unknown) => live && setError(e instanceof ApiError && e.status === 401 ? "unauthorized: open the page with #token=<the agent's UI token>" : String(e)),
      );
    run();
    const timer = setInterval(run, REFRESH_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return { data, error };
}

export function App() {
  const [window, setWindow] = useState<Window>("15m");
  const [filters, setFilters] = useState<Filters>({});
  const [openEvent, setOpenEvent] = useState<Call | null>(null);
  const key = JSON.stringify(filters);

  // One request per distinct window: the chart's window is usually one of
  // the headline's, and each summary scans the store.
  const windows = [...new Set<Window>([...HEADLINE_WINDOWS.map((h) => h.window), window])];
  const summaries = usePolling(
    () =>
      Promise.all(windows.map((w) => fetchSummary(w, filters))).then(
        (all) => new Map(windows.map((w, i) => [w, all[i]])),
      ),
    [window, key],
  );
  const summary = summaries.data?.get(window);
  const drilling = Object.keys(filters).length > 0;
  const calls = usePolling(() => (drilling ? fetchCalls(window, filters) : Promise.resolve([] as Call[])), [window, key]);

  const pick = useCallback((dimension: Dimension, name: string) => {
    setFilters((f) => ({ ...f, [dimension]: name }));
  }, []);
  const unpick = (dimension: Dimension) =>
    setFilters((f) => {
      const next = { ...f };
      delete next[dimension];
      return next;
    });

  const error = summaries.error ?? calls.error;
  return (
    <div className="page">
      <header>
        <h1>mcptap</h1>
        <nav className="windows" aria-label="window">
          {WINDOWS.map((w) => (
            <button key={w} data-testid={`window-${w}`} className={w === window ? "on" : ""} onClick={() => setWindow(w)}>
              {w}
            </button>
          ))}
        </nav>
        <div className="filters" data-testid="filters">
          {(Object.entries(filters) as [Dimension, string][]).map(([d, v]) => (
            <button key={d} className="chip" data-testid={`filter-${d}`} title="remove this filter" onClick={() => unpick(d)}>
              {d} = {v} ×
            </button>
          ))}
          {drilling && (
            <button className="chip clear" data-testid="filters-clear" onClick={() => setFilters({})}>
              clear
            </button>
          )}
          <select
            data-testid="filter-effect-pick"
            value={filters.effect ?? ""}
            title="calls that had a side effect of this kind"
            onChange={(e) => (e.target.value ? pick("effect", e.target.value) : unpick("effect"))}
          >
            <option value="">any effect</option>
            {EFFECT_KINDS.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </div>
      </header>
      {error && <div className="error" data-testid="error">{error}</div>}

      <section className="headline" data-testid="headline">
        {HEADLINE_WINDOWS.map((h) => {
          const s: Summary | undefined = summaries.data?.get(h.window);
          return (
            <div key={h.window} className="card" data-testid={`headline-${h.window}`}>
              <h2>last {h.label}</h2>
              <dl>
                <dt>calls</dt>
                <dd data-field="calls">{s ? fmtCount(s.calls) : "…"}</dd>
                <dt>clients</dt>
                <dd data-field="clients">{s ? fmtCount(s.clients) : "…"}</dd>
                <dt>servers</dt>
                <dd data-field="servers">{s ? fmtCount(s.servers) : "…"}</dd>
                <dt>error rate</dt>
                <dd data-field="error_rate">{s ? fmtRate(s.error_rate) : "…"}</dd>
              </dl>
            </div>
          );
        })}
      </section>

      <section className="panel">
        <h2>calls over time by status, last {window}</h2>
        {summary && <CallsChart summary={summary} />}
      </section>

      {drilling && (
        <section className="panel" data-testid="drill">
          <h2>
            calls where {Object.entries(filters).map(([d, v]) => `${d} = ${v}`).join(", ")}, last {window}
            {calls.data && ` (${calls.data.length}${calls.data.length === 200 ? "+" : ""})`}
          </h2>
          {calls.data && <CallTable calls={calls.data} testid="calls" onOpen={setOpenEvent} />}
        </section>
      )}

      <div className="ranks">
        <RankTable title="tools" dimension="tool" rows={summary?.tools ?? []} onPick={pick} />
        <RankTable title="clients" dimension="client" rows={summary?.clients_ranked ?? []} onPick={pick} />
        <RankTable title="servers" dimension="server" rows={summary?.servers_ranked ?? []} onPick={pick} />
        <RankTable title="users" dimension="user" rows={summary?.users_ranked ?? []} onPick={pick} />
      </div>

      <AlertsPanel window={window} filters={filters} filterKey={key} onOpen={setOpenEvent} />
      <UnusedTools window={window} />
      <LiveTail onOpen={setOpenEvent} />
      {openEvent && <EventView call={openEvent} onClose={() => setOpenEvent(null)} />}
    </div>
  );
}

/** Recent alerts in the window, under the same filters; a row opens it. */
function AlertsPanel(props: { window: Window; filters: Filters; filterKey: string; onOpen: (call: Call) => void }) {
  const { window, filters, filterKey, onOpen } = props;
  const alerts = usePolling(() => fetchAlerts(window, filters), [window, filterKey]);
  return (
    <section className="panel" data-testid="alerts-panel">
      <h2>
        alerts, last {window}
        {alerts.data && ` (${alerts.data.length}${alerts.data.length === 50 ? "+" : ""})`}
      </h2>
      {alerts.data && <CallTable calls={alerts.data} testid="alerts" onOpen={onOpen} />}
    </section>
  );
}

/** Tools each server offered (its latest tools/list in the window) and never called. */
function UnusedTools({ window }: { window: Window }) {
  const servers = usePolling(() => fetchTools(window), [window]);
  const rows = (servers.data ?? []).filter((s) => s.unused.length > 0);
  return (
    <section className="panel" data-testid="unused-tools">
      <h2>tools offered, never called, last {window}</h2>
      <table>
        <thead>
          <tr>
            <th>server</th>
            <th className="num">offered</th>
            <th>never called</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <tr>
              <td colSpan={3} className="empty">none in this window</td>
            </tr>
          )}
          {rows.map((s) => (
            <tr key={s.server} data-testid="unused-tools-row" data-name={s.server}>
              <td className="name">{s.server}</td>
              <td className="num">{s.tools.length}</td>
              <td data-field="unused">{s.unused.join(", ")}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** The newest operations as they happen (server-sent events). */
function LiveTail({ onOpen }: { onOpen: (call: Call) => void }) {
  const [rows, setRows] = useState<Call[]>([]);
  const [lagged, setLagged] = useState(0);
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    const src = openTail(
      (e) => setRows((r) => [callOf(e), ...r].slice(0, TAIL_KEEP)),
      (n) => setLagged((l) => l + n),
    );
    src.onopen = () => setConnected(true);
    src.onerror = () => setConnected(false);
    return () => src.close();
  }, []);
  return (
    <section className="panel" data-testid="tail-panel" data-connected={connected}>
      <h2>
        live tail <span className={connected ? "dot on" : "dot"} title={connected ? "connected" : "disconnected"} />
        {lagged > 0 && <small> ({lagged} events skipped: this page fell behind)</small>}
      </h2>
      <CallTable calls={rows} testid="tail" onOpen={onOpen} />
    </section>
  );
}

/** One full event as the agent recorded it (payloads only where captured). */
function EventView({ call, onClose }: { call: Call; onClose: () => void }) {
  const [event, setEvent] = useState<Record<string, unknown> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const id = call.id;
  useEffect(() => {
    fetchEvent(call.id, call.ts_ms).then(setEvent, (e: unknown) => setError(String(e)));
  }, [call]);
  useEffect(() => {
    const esc = (e: KeyboardEvent) => e.key === "Escape" && onClose();
    document.addEventListener("keydown", esc);
    return () => document.removeEventListener("keydown", esc);
  }, [onClose]);
  return (
    <div className="overlay" onClick={onClose}>
      <div className="modal" data-testid="event" onClick={(e) => e.stopPropagation()}>
        <header>
          <h2>event {id}</h2>
          <button data-testid="event-close" onClick={onClose}>close</button>
        </header>
        {error && <div className="error">{error}</div>}
        {event && <EventSummary event={event} />}
        {event && <EffectsTable event={event} />}
        {event && <pre data-testid="event-json">{JSON.stringify(event, null, 2)}</pre>}
      </div>
    </div>
  );
}

/** The fields an operator reads first, above the full event. */
const SUMMARY_FIELDS: [string, string][] = [
  ["time", "time"],
  ["mcp.method.name", "method"],
  ["gen_ai.tool.name", "tool"],
  ["status", "status"],
  ["error.type", "error"],
  ["duration_s", "duration (s)"],
  ["client.name", "client"],
  ["client.app", "client app"],
  ["client.process.user", "user (process)"],
  ["user.source", "user source"],
  ["user.email", "user e-mail"],
  ["user.name", "user name"],
  ["user.id", "user id"],
  ["user.client_id", "OAuth client"],
  ["user.fingerprint", "credential"],
  ["user.verified", "claims verified"],
  ["mcp.server.cpu.seconds", "server CPU (s)"],
  ["mcp.server.cpu.attribution", "CPU attribution"],
  ["alert.kind", "alert"],
  ["alert.message", "alert message"],
  ["server.name", "server"],
  ["server.process.exe", "server exe"],
  ["network.transport", "transport"],
  ["observer", "seen at"],
  ["mcp.session.id", "session"],
  ["host.name", "host"],
];

function EventSummary({ event }: { event: Record<string, unknown> }) {
  const rows = SUMMARY_FIELDS.map(([path, label]) => [label, lookup(event, path)] as const).filter(
    ([, v]) => v !== undefined && v !== null,
  );
  return (
    <table className="event-summary" data-testid="event-summary">
      <tbody>
        {rows.map(([label, v]) => (
          <tr key={label}>
            <th>{label}</th>
            <td>{String(v)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

interface EffectItem {
  kind: string;
  pid: number;
  path?: string;
  to?: string;
  args?: string[];
  address?: string;
  host?: string;
  host_from?: string;
  denied?: boolean;
  failed?: boolean;
  attribution: string;
}

/** What the call did on the host (`mcp.effects`), item by item. */
function EffectsTable({ event }: { event: Record<string, unknown> }) {
  const fx = lookup(event, "mcp.effects") as
    | { items: EffectItem[]; counts: Record<string, number>; omitted?: Record<string, number>; attribution: string }
    | undefined;
  if (!fx) return null;
  const omitted = Object.entries(fx.omitted ?? {});
  return (
    <section data-testid="event-effects">
      <h3>
        effects ({Object.entries(fx.counts).map(([k, n]) => `${n} ${k}`).join(", ")}; {fx.attribution})
      </h3>
      <table>
        <thead>
          <tr>
            <th>kind</th>
            <th>what</th>
            <th className="num">pid</th>
            <th>attribution</th>
          </tr>
        </thead>
        <tbody>
          {fx.items.map((e, i) => (
            <tr key={i} data-testid="event-effect" data-kind={e.kind}>
              <td>{e.kind}</td>
              <td className="name">
                {e.path ?? e.address ?? ""}
                {e.host ? ` (${e.host}, from ${e.host_from})` : ""}
                {e.to ? ` → ${e.to}` : ""}
                {e.args && e.args.length > 0 ? ` ${e.args.join(" ")}` : ""}
                {e.denied ? " (denied)" : ""}
                {e.failed ? " (failed)" : ""}
              </td>
              <td className="num">{e.pid}</td>
              <td>{e.attribution}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {omitted.length > 0 && <small>not listed: {omitted.map(([k, n]) => `${n} ${k}`).join(", ")}</small>}
    </section>
  );
}
