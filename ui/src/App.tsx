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
  fetchCalls,
  fetchEvent,
  fetchSummary,
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

      <LiveTail onOpen={setOpenEvent} />
      {openEvent && <EventView call={openEvent} onClose={() => setOpenEvent(null)} />}
    </div>
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
  ["client.process.user", "user"],
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
