// Hand-drawn SVG sparklines for the server charts: no chart library.

const SVG = "http://www.w3.org/2000/svg";

// Per-interval series from cumulative samples {t, total, errors, p50, p95}: calls per second, the
// share of failed calls in each interval (%), and the latency percentiles as reported.
export function series(points) {
  const rate = [], errors = [], p50 = [], p95 = [];
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1], b = points[i];
    const dt = b.t - a.t, dn = b.total - a.total;
    rate.push([b.t, dn / dt]);
    errors.push([b.t, dn > 0 ? (100 * (b.errors - a.errors)) / dn : 0]);
  }
  for (const p of points) {
    p50.push([p.t, p.p50 ?? null]);
    p95.push([p.t, p.p95 ?? null]);
  }
  return { rate, errors, p50, p95 };
}

// Draws `lines` (lists of [t, value]; null is a gap) into `figure`: the first line filled, the
// second dashed. The y axis starts at 0 and reaches at least `floor`; `unit` formats a value.
export function drawChart(figure, lines, { unit, floor, name, what }) {
  const plot = figure.querySelector(".plot");
  const W = 300, H = 70;
  const all = lines.flat().filter(([, v]) => v != null && Number.isFinite(v));
  const latest = lines[0].length ? lines[0][lines[0].length - 1][1] : null;
  const peak = all.length ? Math.max(...all.map(([, v]) => v)) : 0;
  const top = Math.max(peak, floor) * 1.1;
  const ts = lines.flat().map(([t]) => t);
  const t0 = Math.min(...ts), t1 = Math.max(...ts);
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * W : W);
  const y = (v) => H - (v / top) * H;

  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const summary = latest == null
    ? `${what} of ${name}: no data yet`
    : `${what} of ${name}: latest ${unit(latest)}, peak ${unit(peak)}`;
  svg.setAttribute("aria-label", summary);
  for (const g of [0, 0.5, 1]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(W));
    line.setAttribute("y1", String(g * H));
    line.setAttribute("y2", String(g * H));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  lines.forEach((points, index) => {
    // A gap (null) splits the line; each run is drawn on its own.
    const runs = [[]];
    for (const [t, v] of points) {
      if (v == null || !Number.isFinite(v)) runs.push([]);
      else runs[runs.length - 1].push([x(t), y(v)]);
    }
    for (const run of runs.filter((r) => r.length)) {
      const coords = run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`);
      if (run.length === 1) coords.push(`${(run[0][0] - 2).toFixed(1)},${run[0][1].toFixed(1)}`);
      if (index === 0) {
        const area = document.createElementNS(SVG, "polygon");
        area.setAttribute("class", "area");
        area.setAttribute("points", `${run[0][0]},${H} ${coords.join(" ")} ${run[run.length - 1][0]},${H}`);
        svg.append(area);
      }
      const poly = document.createElementNS(SVG, "polyline");
      poly.setAttribute("class", index === 0 ? "line" : "line2");
      poly.setAttribute("points", coords.join(" "));
      poly.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(poly);
    }
  });
  plot.replaceChildren(svg);
  figure.dataset.points = String(lines[0].length);
  figure.querySelector("[data-latest]").textContent = latest == null ? "–" : unit(latest);
  const span = t1 > t0 ? `last ${Math.round(t1 - t0)} s` : "collecting…";
  figure.querySelector("[data-peak]").textContent = all.length ? `peak ${unit(peak)} · ${span}` : span;
}
