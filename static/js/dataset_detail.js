// The dataset page: one class-distribution chart per split, and, while the dataset builds,
// live progress (images, images/s, time left) and log over the page's WebSocket.
(function () {
  const script = document.currentScript;
  const $ = (id) => document.getElementById(id);
  const COLORS = { train: "#2563eb", val: "#93c5fd", test: "#f59e0b" };

  const distribution = JSON.parse($("distribution").textContent);
  if (window.Chart) {
    for (const split of distribution.splits) {
      const canvas = $(`chart-${split.split}`);
      if (!canvas) continue;
      new Chart(canvas, {
        type: "bar",
        data: { labels: distribution.classes, datasets: [{ label: split.name, data: split.counts, backgroundColor: COLORS[split.split] }] },
        options: {
          maintainAspectRatio: false,
          animation: false,
          plugins: { legend: { display: false } },
          scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { ticks: { autoSkip: true, maxRotation: 60 } } },
        },
      });
    }
  }

  // The build log opens at its end and follows it, unless the reader scrolled up to read.
  const atEnd = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  const log = $("build-log");
  if (log) log.scrollTop = log.scrollHeight;

  if (script.dataset.finished === "1") return;
  Live.connect(script.dataset.socket, {
    progress(event) {
      if (!event.total) return;
      $("build-progress").hidden = false;
      const bar = $("progress-bar");
      bar.max = event.total;
      bar.value = event.done;
      const what = event.phase === "Extracting" ? "files extracted" : "images";
      const rate = event.images_per_second ? ` · ${Math.round(event.images_per_second)} ${event.phase === "Extracting" ? "files" : "images"}/s` : "";
      const eta = event.eta_seconds == null || event.done >= event.total ? "" : ` · about ${Format.seconds(event.eta_seconds)} left`;
      $("progress-text").textContent = `${Format.count(event.done)} / ${Format.count(event.total)} ${what}${rate}${eta}`;
      document.body.dataset.progress = `${event.done}/${event.total}`;
    },
    log(event) {
      // The socket replays the whole log on (re)connection: start afresh then.
      const box = $("build-log");
      const following = atEnd(box);
      if (!box.dataset.live) { box.textContent = ""; box.dataset.live = "1"; }
      box.textContent += (box.textContent ? "\n" : "") + event.message;
      if (following) box.scrollTop = box.scrollHeight;
    },
    status(event) {
      const pill = $("status");
      pill.className = `status ${event.status}`;
      pill.textContent = event.label || event.status;
      if (event.status === "done" || event.status === "failed") window.location.reload();
    },
  }, () => { delete $("build-log").dataset.live; });
})();
