// The experiment page: charts filled from the history rendered into the page, then
// extended live by the WebSocket. Events carry their epoch number, so a reconnecting
// socket asks for everything after the last epoch it has, and duplicates are ignored.
const ExperimentPage = {
  start(experimentId, status, totalEpochs) {
    const history = JSON.parse(document.getElementById("metrics-data").textContent);
    const $ = (id) => document.getElementById(id);
    let lastEpoch = 0;

    const epochAxis = { type: "linear", min: 0, title: { display: true, text: "epoch" }, ticks: { precision: 1 } };
    const metricsChart = new Chart($("metrics-chart"), {
      type: "line",
      data: {
        datasets: [
          { label: "train loss", data: [], borderColor: "#2563eb", yAxisID: "loss", tension: 0.2 },
          { label: "validation loss", data: [], borderColor: "#16a34a", yAxisID: "loss", tension: 0.2 },
          { label: "validation accuracy (%)", data: [], borderColor: "#ea580c", yAxisID: "accuracy", tension: 0.2 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: epochAxis,
          loss: { position: "left", title: { display: true, text: "loss" }, beginAtZero: true },
          accuracy: { position: "right", min: 0, max: 100, title: { display: true, text: "accuracy (%)" }, grid: { drawOnChartArea: false } },
        },
      },
    });
    const lrChart = new Chart($("lr-chart"), {
      type: "line",
      data: { datasets: [{ label: "learning rate", data: [], borderColor: "#7c3aed", stepped: true }] },
      options: { animation: false, maintainAspectRatio: false, scales: { x: epochAxis, y: { beginAtZero: true } } },
    });

    function addEpoch(event) {
      if (event.epoch <= lastEpoch) return;
      lastEpoch = event.epoch;
      const [train, val, accuracy] = metricsChart.data.datasets;
      if (event.train_loss != null) train.data.push({ x: event.epoch, y: event.train_loss });
      if (event.val_loss != null) val.data.push({ x: event.epoch, y: event.val_loss });
      if (event.val_accuracy != null) accuracy.data.push({ x: event.epoch, y: 100 * event.val_accuracy });
      if (event.learning_rate != null) lrChart.data.datasets[0].data.push({ x: event.epoch, y: event.learning_rate });
      metricsChart.update();
      lrChart.update();
      if (event.train_loss == null) return; // a validation within the epoch
      const acc = event.val_accuracy == null ? "" : `, validation accuracy ${(100 * event.val_accuracy).toFixed(1)}%`;
      $("epoch-text").textContent = `Epoch ${event.epoch} of ${totalEpochs}${acc} · ${Math.round(event.images_per_second)} images/s`;
      document.body.dataset.epochs = String(event.epoch);
    }

    function setStatus(event) {
      const badge = $("status");
      badge.className = `status ${event.status}`;
      badge.textContent = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", aborted: "Aborted" }[event.status] || event.status;
      const error = $("error");
      error.textContent = event.error || "";
      error.hidden = !event.error;
      const active = event.status === "queued" || event.status === "running";
      // What just happened, in words: "The worker stopped; resuming from epoch 3 (attempt 2 of 3)".
      if (event.message !== undefined) $("status-message").textContent = active ? event.message : "";
      const abort = $("abort-form");
      if (abort) abort.hidden = !active;
      $("epoch-progress").hidden = event.status !== "running";
      // Resume and the final snapshots come with a fresh render of the page's controls.
      if (!active && status !== event.status && (event.status === "aborted" || event.status === "failed")) {
        setTimeout(() => window.location.reload(), 800);
      }
      status = event.status;
      document.body.dataset.status = event.status;
    }

    function showProgress(event) {
      $("epoch-progress").hidden = false;
      $("progress-bar").max = event.steps;
      $("progress-bar").value = event.step;
      const eta = event.eta_seconds == null ? "" : ` · about ${formatSeconds(event.eta_seconds)} left`;
      $("progress-text").textContent =
        `Epoch ${event.epoch + 1}: batch ${event.step} of ${event.steps} · ${Math.round(event.images_per_second)} images/s${eta}`;
    }

    function formatSeconds(s) {
      return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min` : s >= 60 ? `${Math.round(s / 60)} min` : `${Math.ceil(s)} s`;
    }

    function addSnapshot(event) {
      const select = $("id_snapshot");
      if (!select || Array.from(select.options).some((o) => o.value === String(event.id))) return;
      // Newest first, and chosen: that is the snapshot people want to try.
      select.prepend(new Option(`Epoch ${event.epoch}`, event.id, true, true));
      $("classify").hidden = false;
    }

    function addLog(event) {
      const line = document.createElement("span");
      line.className = event.level;
      line.textContent = `${event.time.slice(11, 19)}  ${event.message}\n`;
      $("log").append(line);
      $("log").scrollTop = $("log").scrollHeight;
    }

    // The panel is rendered by the server (one template for load and refresh).
    let hardwarePending = false;
    async function showHardware() {
      if (hardwarePending) return;
      hardwarePending = true;
      try {
        const response = await fetch(`/experiments/${experimentId}/hardware/`);
        if (response.ok) $("hardware-body").innerHTML = await response.text();
      } finally {
        hardwarePending = false;
      }
    }

    // A snapshot's exports are rendered by the server too, and fetched again when one changes.
    async function showExport(event) {
      const cell = document.querySelector(`td.exports[data-snapshot="${event.snapshot}"]`);
      if (!cell) return;
      const shown = cell.querySelector(`.export[data-format="${event.format}"]`);
      if (shown && shown.dataset.status === event.status) return;
      const response = await fetch(cell.dataset.url);
      if (response.ok) cell.innerHTML = await response.text();
    }

    history.forEach(addEpoch);
    document.body.dataset.status = status;
    Live.connect(`/ws/experiments/${experimentId}/`, {
      epoch: addEpoch,
      status: setStatus,
      snapshot: addSnapshot,
      progress: showProgress,
      log: addLog,
      hardware: showHardware,
      export: showExport,
    }, (socket) => socket.send(JSON.stringify({ after_epoch: lastEpoch })));
  },
};
