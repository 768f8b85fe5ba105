import { Call, Dimension, Rank } from "./api";
import { fmtCount, fmtMs, fmtRate, fmtTime, statusColour } from "./format";

/** A ranked dimension (tools, clients, servers, users); a row drills down. */
export function RankTable(props: {
  title: string;
  dimension: Dimension;
  rows: Rank[];
  onPick: (dimension: Dimension, name: string) => void;
}) {
  const { title, dimension, rows, onPick } = props;
  return (
    <section className="panel" data-testid={`rank-${dimension}`}>
      <h2>{title}</h2>
      <table>
        <thead>
          <tr>
            <th>{dimension}</th>
            <th className="num">calls</th>
            <th className="num">errors</th>
            <th className="num">error rate</th>
            <th className="num">p50</th>
            <th className="num">p95</th>
            <th className="num">p99</th>
            <th className="num" title="server CPU spent on these calls">CPU</th>
            <th className="num" title="files, programs, connections, listeners">effects</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 && (
            <tr>
              <td colSpan={9} className="empty">none in this window</td>
            </tr>
          )}
          {rows.map((r) => (
            <tr
              key={r.name}
              className="clickable"
              data-testid={`rank-${dimension}-row`}
              data-name={r.name}
              onClick={() => onPick(dimension, r.name)}
            >
              <td className="name" title={r.name}>{r.name}</td>
              <td className="num" data-field="calls">{fmtCount(r.calls)}</td>
              <td className="num" data-field="errors">{fmtCount(r.errors)}</td>
              <td className="num" data-field="error_rate">{fmtRate(r.error_rate)}</td>
              <td className="num">{fmtMs(r.p50_ms)}</td>
              <td className="num">{fmtMs(r.p95_ms)}</td>
              <td className="num">{fmtMs(r.p99_ms)}</td>
              <td className="num" data-field="cpu">{fmtMs(r.cpu_s * 1000)}</td>
              <td className="num" data-field="effects">{fmtCount(r.effects)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

/** Calls, newest first; a row opens the full event. */
export function CallTable(props: { calls: Call[]; testid: string; onOpen: (call: Call) => void }) {
  const { calls, testid, onOpen } = props;
  return (
    <table data-testid={testid}>
      <thead>
        <tr>
          <th>time (UTC)</th>
          <th>method</th>
          <th>tool / name</th>
          <th>client</th>
          <th>server</th>
          <th>user</th>
          <th>status</th>
          <th className="num">duration</th>
        </tr>
      </thead>
      <tbody>
        {calls.length === 0 && (
          <tr>
            <td colSpan={8} className="empty">no calls</td>
          </tr>
        )}
        {calls.map((c) => (
          <tr key={c.id} className="clickable" data-testid={`${testid}-row`} data-id={c.id} onClick={() => onOpen(c)}>
            <td className="mono">{fmtTime(c.ts_ms)}</td>
            <td>{c.method ?? "–"}</td>
            <td>{c.tool ?? "–"}</td>
            <td>{c.client ?? "–"}</td>
            <td>{c.server ?? "–"}</td>
            <td>{c.user ?? "–"}</td>
            <td data-field="status">
              <span className="status" style={{ background: statusColour(c.status) }}>{c.status ?? "–"}</span>
            </td>
            <td className="num">{fmtMs(c.duration_ms)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
