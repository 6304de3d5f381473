// The experiment page's classify result: a small bar chart for each histogram of the
// per-layer view. The counts and bin edges come with the page (json_script); each canvas
// names its layer (data-histogram, the row's index) and which histogram (data-kind).
(function () {
  const source = document.getElementById("layer-histograms");
  if (!source || !window.Chart) return;
  const layers = JSON.parse(source.textContent);
  const COLORS = { activations: "#2563eb", weights: "#ea580c" };
  const short = (x) => (Math.abs(x) >= 1000 || (x !== 0 && Math.abs(x) < 0.01) ? x.toExponential(1) : x.toPrecision(2));

  for (const canvas of document.querySelectorAll("canvas[data-histogram]")) {
    const kind = canvas.dataset.kind;
    const histogram = layers[Number(canvas.dataset.histogram)][kind];
    if (!histogram) continue;
    const { counts, edges } = histogram;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: counts.map((_, i) => `${short(edges[i])} to ${short(edges[i + 1])}`),
        datasets: [{ data: counts, backgroundColor: COLORS[kind], barPercentage: 1, categoryPercentage: 1 }],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: {
          x: { ticks: { callback: (_, i) => (i === 0 || i === counts.length - 1 ? short(edges[i === 0 ? 0 : i + 1]) : ""), autoSkip: false, maxRotation: 0, font: { size: 10 } }, grid: { display: false } },
          y: { beginAtZero: true, ticks: { maxTicksLimit: 3, precision: 0, font: { size: 10 } } },
        },
      },
    });
  }
})();
