// Several experiments' curves overlaid, one chart per metric: the sweep and compare pages.
// The page renders its curves with json_script ([{name, points}], each point an epoch's
// event as EpochMetric.as_event gives it, plus "wall", seconds since the run started, where
// the page has it) and marks each chart's canvas with data-curve (the metric) and
// data-scale (100 for a percentage).
const Curves = {
  COLORS: ["#2563eb", "#16a34a", "#ea580c", "#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#4b5563"],

  color(index) {
    return Curves.COLORS[index % Curves.COLORS.length];
  },

  overlay(canvas, curves, key, scale, x) {
    const wall = x === "wall";
    return new Chart(canvas, {
      type: "line",
      data: {
        datasets: curves.map((curve, i) => ({
          label: curve.name, borderColor: Curves.color(i), backgroundColor: Curves.color(i), tension: 0.2,
          data: curve.points.filter((p) => p[key] != null && p[x] != null).map((p) => ({ x: p[x], y: scale * p[key] })),
        })),
      },
      options: {
        animation: false, maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: { type: "linear", min: 0, title: { display: true, text: wall ? "wall time" : "epoch" },
               ticks: wall ? { callback: (value) => Format.seconds(value) } : {} },
          y: { beginAtZero: true },
        },
      },
    });
  },

  // Draws every canvas[data-curve] of the page; returns the charts, to redraw them by another x.
  drawAll(curves, x = "epoch") {
    return Array.from(document.querySelectorAll("canvas[data-curve]"), (canvas) =>
      Curves.overlay(canvas, curves, canvas.dataset.curve, Number(canvas.dataset.scale || 1), x));
  },

  data(id) {
    return JSON.parse(document.getElementById(id).textContent);
  },
};
