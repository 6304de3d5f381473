// The experiment page: charts filled from the history rendered into the page, then
// extended live by the WebSocket. Events carry their epoch number, so a reconnecting
// socket asks for everything after the last epoch it has, and duplicates are ignored.
const ExperimentPage = {
  start(experimentId, status, totalEpochs) {
    const history = JSON.parse(document.getElementById("metrics-data").textContent);
    let lastEpoch = 0;

    const metricsChart = new Chart(document.getElementById("metrics-chart"), {
      type: "line",
      data: {
        labels: [],
        datasets: [
          { label: "train loss", data: [], borderColor: "#2563eb", yAxisID: "loss", tension: 0.2 },
          { label: "validation loss", data: [], borderColor: "#16a34a", yAxisID: "loss", tension: 0.2 },
          { label: "validation accuracy (%)", data: [], borderColor: "#ea580c", yAxisID: "accuracy", tension: 0.2 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { title: { display: true, text: "epoch" } },
          loss: { position: "left", title: { display: true, text: "loss" }, beginAtZero: true },
          accuracy: { position: "right", min: 0, max: 100, title: { display: true, text: "accuracy (%)" }, grid: { drawOnChartArea: false } },
        },
      },
    });
    const lrChart = new Chart(document.getElementById("lr-chart"), {
      type: "line",
      data: { labels: [], datasets: [{ label: "learning rate", data: [], borderColor: "#7c3aed", stepped: true }] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { title: { display: true, text: "epoch" } }, y: { beginAtZero: true } },
      },
    });

    function addEpoch(event) {
      if (event.epoch <= lastEpoch) return;
      lastEpoch = event.epoch;
      metricsChart.data.labels.push(event.epoch);
      metricsChart.data.datasets[0].data.push(event.train_loss);
      metricsChart.data.datasets[1].data.push(event.val_loss);
      metricsChart.data.datasets[2].data.push(event.val_accuracy == null ? null : 100 * event.val_accuracy);
      lrChart.data.labels.push(event.epoch);
      lrChart.data.datasets[0].data.push(event.learning_rate);
      metricsChart.update();
      lrChart.update();
      const accuracy = event.val_accuracy == null ? "" : `, validation accuracy ${(100 * event.val_accuracy).toFixed(1)}%`;
      document.getElementById("epoch-text").textContent =
        `Epoch ${event.epoch} of ${totalEpochs}${accuracy} · ${Math.round(event.images_per_second)} images/s`;
      document.body.dataset.epochs = String(lastEpoch);
    }

    function setStatus(event) {
      const badge = document.getElementById("status");
      badge.className = `status ${event.status}`;
      badge.textContent = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", aborted: "Aborted" }[event.status] || event.status;
      const error = document.getElementById("error");
      error.textContent = event.error || "";
      error.hidden = !event.error;
      const abort = document.getElementById("abort-form");
      if (abort) abort.hidden = !(event.status === "queued" || event.status === "running");
    }

    function addSnapshot(event) {
      const select = document.getElementById("id_snapshot");
      if (!select || Array.from(select.options).some((o) => o.value === String(event.id))) return;
      // Newest first, and chosen: that is the snapshot people want to try.
      select.prepend(new Option(`Epoch ${event.epoch}`, event.id, true, true));
      document.getElementById("classify").hidden = false;
    }

    history.forEach(addEpoch);
    Live.connect(`/ws/experiments/${experimentId}/`, {
      epoch: addEpoch,
      status: setStatus,
      snapshot: addSnapshot,
    }, (socket) => socket.send(JSON.stringify({ after_epoch: lastEpoch })));
  },
};
