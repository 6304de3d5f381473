// The compare page: the experiments' curves overlaid (static/js/curves.js) by epoch or by
// wall time, each experiment's colour next to its name, and the settings table narrowed to
// the settings that differ on request.
(function () {
  const curves = Curves.data("curves-data");
  let charts = Curves.drawAll(curves);
  document.querySelectorAll('input[name="x-axis"]').forEach((input) => {
    input.addEventListener("change", () => {
      charts.forEach((chart) => chart.destroy());
      charts = Curves.drawAll(curves, input.value);
      document.body.dataset.xAxis = input.value;
    });
  });
  document.querySelectorAll("[data-curve-index]").forEach((key) => {
    key.style.background = Curves.color(Number(key.dataset.curveIndex));
  });
  const only = document.getElementById("only-differences");
  const table = document.getElementById("settings");
  only.addEventListener("change", () => table.classList.toggle("only-differences", only.checked));
})();
