// The sweep page: its experiments' curves overlaid (static/js/curves.js), and, while they
// run, each member's row and curve as its epochs come in (training.consumers.SweepConsumer).
(function () {
  const curves = Curves.data("curves-data");
  const charts = Curves.drawAll(curves);
  const table = document.getElementById("sweep-table");
  if (!table) return;
  const statusLabels = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", aborted: "Aborted" };
  const lastEpoch = {};
  const best = {};
  curves.forEach((curve) => {
    const epochs = curve.points.map((p) => p.epoch);
    lastEpoch[curve.id] = epochs.length ? Math.max(...epochs) : 0;
    const accuracies = curve.points.map((p) => p.val_accuracy).filter((a) => a != null);
    best[curve.id] = accuracies.length ? Math.max(...accuracies) : null;
  });
  const cell = (id, name) => table.querySelector(`tr[data-experiment="${id}"] .sweep-${name}`);
  const percent = (value) => `${Math.round(100 * value)}%`;

  function addEpoch(event) {
    const id = event.experiment;
    if (!(id in lastEpoch) || event.epoch <= lastEpoch[id]) return;
    lastEpoch[id] = event.epoch;
    const index = curves.findIndex((curve) => curve.id === id);
    charts.forEach((chart, i) => {
      const canvas = chart.canvas;
      const value = event[canvas.dataset.curve];
      if (value == null) return;
      chart.data.datasets[index].data.push({ x: event.epoch, y: Number(canvas.dataset.scale || 1) * value });
      chart.update("none");
    });
    if (event.val_accuracy != null && (best[id] == null || event.val_accuracy > best[id])) {
      best[id] = event.val_accuracy;
      cell(id, "best").textContent = percent(best[id]);
    }
    if (event.train_loss == null) return; // a validation within the epoch
    cell(id, "epoch").textContent = String(event.epoch);
    cell(id, "train-loss").textContent = event.train_loss.toFixed(4);
    cell(id, "val-loss").textContent = event.val_loss == null ? "–" : event.val_loss.toFixed(4);
    cell(id, "val-accuracy").textContent = event.val_accuracy == null ? "–" : percent(event.val_accuracy);
  }

  function setStatus(event) {
    const badge = cell(event.experiment, "status")?.querySelector(".status");
    if (!badge) return;
    badge.className = `status ${event.status}`;
    badge.textContent = event.label || statusLabels[event.status] || event.status;
    const row = badge.closest("tr");
    row.dataset.status = event.status;
    const active = Array.from(table.querySelectorAll(".sweep-status .status")).filter((b) =>
      b.classList.contains("queued") || b.classList.contains("running"));
    document.body.dataset.sweepActive = String(active.length);
  }

  const refill = (socket) => socket.send(JSON.stringify({ after_epoch: lastEpoch }));
  Live.connect(`/ws/sweeps/${table.dataset.sweep}/`, { epoch: addEpoch, status: setStatus }, refill, refill);
})();
