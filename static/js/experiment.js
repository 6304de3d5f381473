// The experiment page: charts filled from the history rendered into the page, then
// extended live by the WebSocket. Events carry their epoch number, so a reconnecting
// socket asks for everything after the last epoch it has, and duplicates are ignored.
const ExperimentPage = {
  start(experimentId, status, totalEpochs) {
    const history = JSON.parse(document.getElementById("metrics-data").textContent);
    const $ = (id) => document.getElementById(id);
    let lastEpoch = 0;
    // The last log line shown: a refill after a lost event sends only the lines after it.
    let lastLine = Number($("log").dataset.lastLine || 0);

    const charts = ExperimentCharts.create(history);
    const statusLabels = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", aborted: "Aborted" };
    const removedSnapshots = new Set();

    function addEpoch(event, live = true) {
      if (event.epoch <= lastEpoch) return;
      lastEpoch = event.epoch;
      if (live) charts.addEpoch(event);
      if (event.train_loss == null) return; // a validation within the epoch
      const acc = event.val_accuracy == null ? "" : `, validation accuracy ${(100 * event.val_accuracy).toFixed(1)}%`;
      $("epoch-text").textContent = `Epoch ${event.epoch} of ${totalEpochs}${acc} · ${Math.round(event.images_per_second)} images/s`;
      document.body.dataset.epochs = String(event.epoch);
    }

    function setStatus(event) {
      const badge = $("status");
      badge.className = `status ${event.status}`;
      badge.textContent = event.label || statusLabels[event.status] || event.status;
      addStatusChange(event);
      const error = $("error");
      error.textContent = event.error || "";
      error.hidden = !event.error;
      const active = event.status === "queued" || event.status === "running";
      // What just happened, in words: "The worker stopped; resuming from epoch 3 (attempt 2 of 3)".
      if (event.message !== undefined) $("status-message").textContent = active ? event.message : "";
      // Why a queued run does not start (its team's quota is full), until it starts.
      const waiting = event.status === "queued" ? event.waiting || "" : "";
      $("waiting").textContent = waiting;
      $("waiting").hidden = !waiting;
      const abort = $("abort-form");
      if (abort) abort.hidden = !active;
      $("epoch-progress").hidden = event.status !== "running";
      if (status !== event.status) {
        // A notice about what led here ("Queued to resume …") is out of date once the run moves on.
        document.querySelectorAll("main > .flash:not(#live-status)").forEach((notice) => notice.remove());
      }
      if (!active && status !== event.status) showHardware(); // the panel says sampling stopped
      status = event.status;
      showResume();
      document.body.dataset.status = event.status;
    }

    function showProgress(event) {
      $("epoch-progress").hidden = false;
      $("progress-bar").max = event.steps;
      $("progress-bar").value = event.step;
      const eta = event.eta_seconds == null ? "" : ` · about ${Format.seconds(event.eta_seconds)} left`;
      $("progress-text").textContent =
        `Epoch ${event.epoch} of ${totalEpochs}: batch ${event.step} of ${event.steps} · ${Math.round(event.images_per_second)} images/s${eta}`;
    }

    function addSnapshot(event) {
      showSnapshots();
      const select = $("id_snapshot");
      if (!select || Array.from(select.options).some((o) => o.value === String(event.id))) return;
      // Newest first, and chosen: that is the snapshot people want to try.
      select.prepend(new Option(`Epoch ${event.epoch}`, event.id, true, true));
      $("classify").hidden = false;
    }

    // A refill's list of the snapshots there are now: add the new, drop the removed.
    function setSnapshots(event) {
      const ids = new Set(event.snapshots.map((snapshot) => String(snapshot.id)));
      const select = $("id_snapshot");
      Array.from(select ? select.options : []).forEach((option) => {
        if (option.value && !ids.has(option.value)) removeSnapshot({ id: option.value });
      });
      const shown = new Set(Array.from($("snapshots").tBodies[0].rows, (row) => row.dataset.snapshotRow));
      const newest = event.snapshots[0];
      if (newest && !shown.has(String(newest.id))) addSnapshot(newest);
    }

    function removeSnapshot(event) {
      removedSnapshots.add(String(event.id));
      $("id_snapshot")?.querySelector(`option[value="${event.id}"]`)?.remove();
      // Retention removes the older one right after adding the new one: while the new rows
      // are on their way the old row stays, so the table never flickers empty.
      if (!snapshotsTicket) dropRemovedSnapshots($("snapshots").tBodies[0]);
      showResume();
    }

    function dropRemovedSnapshots(body) {
      removedSnapshots.forEach((id) => body.querySelector(`tr[data-snapshot-row="${id}"]`)?.remove());
    }

    // The table's rows (with their export cells) are the server's: take them from a fresh render.
    let snapshotsTicket = null;
    async function showSnapshots() {
      const ticket = (snapshotsTicket = {});
      try {
        const response = await fetch(window.location.pathname);
        const fresh = response.ok && new DOMParser().parseFromString(await response.text(), "text/html");
        const rows = fresh && fresh.querySelector("#snapshots tbody");
        if (ticket !== snapshotsTicket || !rows) return;
        $("snapshots").tBodies[0].replaceWith(document.adoptNode(rows));
      } catch {
        // Offline for a moment: the rows stay as they are until the next snapshot's event.
      } finally {
        if (ticket === snapshotsTicket) {
          snapshotsTicket = null;
          // A removal heard while the render was on its way wins over it.
          const body = $("snapshots").tBodies[0];
          dropRemovedSnapshots(body);
          $("snapshots-card").hidden = body.rows.length === 0;
          showResume();
        }
      }
    }

    // Resume needs a stopped run and a snapshot to go on from.
    function showResume() {
      const resume = $("resume-form");
      if (!resume) return;
      const hasSnapshot = $("snapshots").tBodies[0].rows.length > 0;
      resume.hidden = !((status === "aborted" || status === "failed") && hasSnapshot);
    }

    function addStatusChange(event) {
      const body = $("status-history").tBodies[0];
      const last = body.rows[body.rows.length - 1];
      // The socket repeats the current status on every (re)connection: the row is there already.
      if (last && last.dataset.status === event.status && last.cells[2].textContent === (event.message || "")) return;
      const row = body.insertRow();
      row.dataset.status = event.status;
      const when = row.insertCell();
      when.className = "nowrap";
      when.textContent = new Date().toISOString().slice(0, 19).replace("T", " ");
      const badge = document.createElement("span");
      badge.className = `status ${event.status}`;
      badge.textContent = event.label || statusLabels[event.status] || event.status;
      row.insertCell().append(badge);
      row.insertCell().textContent = event.message || "";
    }

    function addLog(event) {
      if (event.id != null) {
        if (event.id <= lastLine) return; // refilled twice, or already rendered
        lastLine = event.id;
      }
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

    history.forEach((event) => addEpoch(event, false));
    document.body.dataset.status = status;
    Live.connect(`/ws/experiments/${experimentId}/`, {
      epoch: addEpoch,
      status: setStatus,
      snapshot: addSnapshot,
      snapshot_removed: removeSnapshot,
      snapshots: setSnapshots,
      steps: charts.addSteps,
      progress: showProgress,
      log: addLog,
      hardware: showHardware,
      export: showExport,
    }, (socket) => {
      socket.send(JSON.stringify({ after_epoch: lastEpoch, after_log: lastLine }));
      charts.refill();
    }, (socket) => {
      // An event was lost on the way: everything after what the page has, from the database.
      socket.send(JSON.stringify({ after_epoch: lastEpoch, after_log: lastLine }));
      charts.refill();
    });
  },
};

// The page names the experiment on this script element: data-experiment, data-status,
// data-epochs.
(function () {
  const { experiment, status, epochs } = document.currentScript.dataset;
  ExperimentPage.start(Number(experiment), status, Number(epochs));
})();
