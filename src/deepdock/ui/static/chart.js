// A line chart on a canvas: several series (steps → values), axes with a few ticks, a legend.
// The server downsamples long series (LTTB) to about the canvas' width, so drawing is a few thousand
// segments at most, whatever the series' length.

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

export function drawChart(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 12, top: 22, bottom: 24 };
  let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
  for (const s of series) {
    for (let i = 0; i < s.steps.length; i++) {
      const x = s.steps[i], y = s.values[i];
      if (!Number.isFinite(y)) continue;
      if (x < xmin) xmin = x; if (x > xmax) xmax = x;
      if (y < ymin) ymin = y; if (y > ymax) ymax = y;
    }
  }
  if (!Number.isFinite(xmin)) { ctx.fillStyle = "#6b7280"; ctx.fillText("no points yet", pad.left, height / 2); return; }
  if (xmax === xmin) xmax = xmin + 1;
  if (ymax === ymin) { ymax += 1; ymin -= 1; }
  const w = width - pad.left - pad.right, h = height - pad.top - pad.bottom;
  const px = (x) => pad.left + ((x - xmin) / (xmax - xmin)) * w;
  const py = (y) => pad.top + h - ((y - ymin) / (ymax - ymin)) * h;
  ctx.strokeStyle = "#e5e7eb"; ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = ymin + ((ymax - ymin) * i) / 4, yy = py(y);
    ctx.beginPath(); ctx.moveTo(pad.left, yy); ctx.lineTo(width - pad.right, yy); ctx.stroke();
    ctx.fillText(formatNumber(y), 4, yy + 4);
    const x = xmin + ((xmax - xmin) * i) / 4;
    ctx.fillText(String(Math.round(x)), px(x) - 10, height - 6);
  }
  series.forEach((s, k) => {
    ctx.strokeStyle = COLORS[k % COLORS.length]; ctx.lineWidth = 1.5; ctx.beginPath();
    let started = false;
    for (let i = 0; i < s.steps.length; i++) {
      const y = s.values[i];
      if (!Number.isFinite(y)) continue;
      if (started) ctx.lineTo(px(s.steps[i]), py(y)); else { ctx.moveTo(px(s.steps[i]), py(y)); started = true; }
    }
    ctx.stroke();
    ctx.fillStyle = COLORS[k % COLORS.length];
    ctx.fillText(s.label, pad.left + 8 + k * 140, 14);
  });
}

function formatNumber(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return v.toFixed(a < 1 ? 3 : a < 100 ? 2 : 0);
}
