import { Summary } from "./api";
import { STATUS_COLOURS, fmtTime, statusColour } from "./format";

/** Calls over time, stacked by status: one bar per bucket of the window. */
export function CallsChart({ summary }: { summary: Summary }) {
  const { points, bucket_ms } = summary.series;
  const width = 900;
  const height = 180;
  const pad = { left: 40, bottom: 20, top: 8 };
  const totals = points.map((p) => Object.values(p.by_status).reduce((a, b) => a + b, 0));
  const max = Math.max(1, ...totals);
  const slot = (width - pad.left) / Math.max(1, points.length);
  const plotH = height - pad.bottom - pad.top;
  const statuses = [...new Set(points.flatMap((p) => Object.keys(p.by_status)))].sort(
    (a, b) => Object.keys(STATUS_COLOURS).indexOf(a) - Object.keys(STATUS_COLOURS).indexOf(b),
  );
  return (
    <figure className="chart" data-testid="chart" data-total={totals.reduce((a, b) => a + b, 0)}>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label="calls over time by status">
        <text x={pad.left - 6} y={pad.top + 8} textAnchor="end" className="axis">{max}</text>
        <text x={pad.left - 6} y={height - pad.bottom} textAnchor="end" className="axis">0</text>
        <line x1={pad.left} x2={width} y1={height - pad.bottom} y2={height - pad.bottom} className="axis-line" />
        {points.map((p, i) => {
          let y = height - pad.bottom;
          return (
            <g key={p.t_ms}>
              <title>
                {`${fmtTime(p.t_ms)} (+${Math.round(bucket_ms / 1000)} s)\n` +
                  Object.entries(p.by_status).map(([s, n]) => `${s}: ${n}`).join("\n")}
              </title>
              {statuses
                .filter((s) => p.by_status[s])
                .map((s) => {
                  const h = (p.by_status[s] / max) * plotH;
                  y -= h;
                  return (
                    <rect key={s} x={pad.left + i * slot + 1} y={y} width={Math.max(1, slot - 2)} height={h} fill={statusColour(s)} />
                  );
                })}
            </g>
          );
        })}
        {points.length > 0 && (
          <>
            <text x={pad.left} y={height - 4} className="axis">{fmtTime(points[0].t_ms).slice(5, 16)}</text>
            <text x={width} y={height - 4} textAnchor="end" className="axis">
              {fmtTime(points[points.length - 1].t_ms + bucket_ms).slice(5, 16)}
            </text>
          </>
        )}
      </svg>
      <figcaption className="legend">
        {statuses.length === 0 && <span>no calls in this window</span>}
        {statuses.map((s) => (
          <span key={s} data-testid={`legend-${s}`}>
            <i style={{ background: statusColour(s) }} /> {s}{" "}
            {points.reduce((a, p) => a + (p.by_status[s] ?? 0), 0)}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}
