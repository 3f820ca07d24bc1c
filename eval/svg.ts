/** The report's plots as small standalone SVG files (line chart, grouped bars, scatter): no plotting dependency. */

export interface Series {
  name: string;
  points: Array<[number, number]>;
  /** Optional [low, high] per point, drawn as an error bar (e.g. a 95 % interval). */
  intervals?: Array<[number, number]>;
}

const W = 680, H = 340, M = { left: 56, right: 190, top: 34, bottom: 44 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#7f7f7f', '#9467bd', '#ff7f0e', '#8c564b'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number) => (Math.abs(v) >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(2));

interface Axes {
  x: (v: number) => number;
  y: (v: number) => number;
  body: string[];
}

/** Frame, title, axis labels and ticks for the data ranges; returns the scales and the element list to append to. */
function axes(title: string, xLabel: string, yLabel: string, [x0, x1]: [number, number], [y0, y1]: [number, number],
  xTicks: number[] | null): Axes {
  const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
  const x = (v: number) => M.left + ((v - x0) / (x1 - x0 || 1)) * pw;
  const y = (v: number) => M.top + ph - ((v - y0) / (y1 - y0 || 1)) * ph;
  const body = [
    `<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`,
    `<text x="${M.left + pw / 2}" y="20" text-anchor="middle" font-size="13">${esc(title)}</text>`,
    `<line x1="${M.left}" y1="${M.top + ph}" x2="${M.left + pw}" y2="${M.top + ph}" stroke="black"/>`,
    `<line x1="${M.left}" y1="${M.top}" x2="${M.left}" y2="${M.top + ph}" stroke="black"/>`,
    `<text x="${M.left + pw / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`,
    `<text x="14" y="${M.top + ph / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${M.top + ph / 2})">${esc(yLabel)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    body.push(`<line x1="${M.left - 4}" y1="${y(v)}" x2="${M.left + pw}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${M.left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="10">${fmt(v)}</text>`);
  }
  for (const v of xTicks ?? [0, 1, 2, 3, 4].map((i) => x0 + ((x1 - x0) * i) / 4))
    body.push(`<text x="${x(v)}" y="${M.top + ph + 16}" text-anchor="middle" font-size="10">${fmt(v)}</text>`);
  return { x, y, body };
}

function legend(names: string[]): string[] {
  return names.flatMap((n, i) => [
    `<rect x="${W - M.right + 12}" y="${M.top + i * 18}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
    `<text x="${W - M.right + 30}" y="${M.top + i * 18 + 10}" font-size="11">${esc(n)}</text>`,
  ]);
}

const svg = (body: string[]) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">\n${body.join('\n')}\n</svg>\n`;

function range(values: number[], pad = 0): [number, number] {
  const lo = Math.min(...values), hi = Math.max(...values);
  return lo === hi ? [lo - 1, hi + 1] : [lo - pad * (hi - lo), hi + pad * (hi - lo)];
}

export function lineChart(title: string, xLabel: string, yLabel: string, series: Series[], yRange?: [number, number]): string {
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const a = axes(title, xLabel, yLabel, range(xs), yRange ?? range(ys, 0.05), [...new Set(xs)].sort((p, q) => p - q));
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    // Series at the same x are nudged apart so that their error bars do not hide each other.
    const dx = (i - (series.length - 1) / 2) * 3;
    a.body.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${s.points.map(([x, y]) => `${a.x(x) + dx},${a.y(y)}`).join(' ')}"/>`);
    s.points.forEach(([x, y], j) => {
      a.body.push(`<circle cx="${a.x(x) + dx}" cy="${a.y(y)}" r="3" fill="${c}"/>`);
      const iv = s.intervals?.[j];
      if (iv) a.body.push(`<line x1="${a.x(x) + dx}" y1="${a.y(iv[0])}" x2="${a.x(x) + dx}" y2="${a.y(iv[1])}" stroke="${c}" stroke-width="1.2"/>`);
    });
  });
  return svg([...a.body, ...legend(series.map((s) => s.name))]);
}

/** Bars grouped by category (x), one colour per series; values[s][c]. */
export function barChart(title: string, xLabel: string, yLabel: string, categories: string[], names: string[],
  values: number[][]): string {
  const all = values.flat();
  const a = axes(title, xLabel, yLabel, [0, categories.length], [Math.min(0, ...all), Math.max(0, ...all) * 1.1 || 1], []);
  const slot = (a.x(1) - a.x(0)) * 0.8, bw = slot / names.length;
  a.body.push(`<line x1="${M.left}" y1="${a.y(0)}" x2="${W - M.right}" y2="${a.y(0)}" stroke="black" stroke-width="1.2"/>`);
  categories.forEach((cat, c) => {
    const left = a.x(c) + (a.x(1) - a.x(0)) * 0.1;
    a.body.push(`<text x="${left + slot / 2}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="10">${esc(cat)}</text>`);
    names.forEach((_, s) => {
      const v = values[s][c];
      if (!Number.isFinite(v)) return;
      const y = a.y(Math.max(v, 0)), h = Math.abs(a.y(v) - a.y(0));
      a.body.push(`<rect x="${left + s * bw}" y="${y}" width="${bw - 1}" height="${h}" fill="${COLORS[s % COLORS.length]}"/>`);
    });
  });
  return svg([...a.body, ...legend(names)]);
}

export function scatter(title: string, xLabel: string, yLabel: string, series: Series[]): string {
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const a = axes(title, xLabel, yLabel, range(xs, 0.02), range(ys, 0.05), null);
  series.forEach((s, i) => {
    for (const [x, y] of s.points)
      a.body.push(`<circle cx="${a.x(x).toFixed(1)}" cy="${a.y(y).toFixed(1)}" r="1.6" fill="${COLORS[i % COLORS.length]}" fill-opacity="0.5"/>`);
  });
  return svg([...a.body, ...legend(series.map((s) => s.name))]);
}
