// The evaluation page: while it runs, live progress (images, images/s, time left), log and
// status over the page's WebSocket; the results render with the page once it is done.
(function () {
  const script = document.currentScript;
  if (script.dataset.finished === "1") return;
  const $ = (id) => document.getElementById(id);
  Live.connect(script.dataset.socket, {
    progress(event) {
      if (!event.total) return;
      const bar = $("progress-bar");
      bar.max = event.total;
      bar.value = event.done;
      const rate = event.images_per_second ? ` · ${Math.round(event.images_per_second)} images/s` : "";
      const eta = event.eta_seconds == null || event.done >= event.total ? "" : ` · about ${Format.seconds(event.eta_seconds)} left`;
      $("progress-text").textContent = `${Format.count(event.done)} / ${Format.count(event.total)} images${rate}${eta}`;
      document.body.dataset.progress = `${event.done}/${event.total}`;
    },
    log(event) {
      // The socket replays the whole log on (re)connection: start afresh then.
      const box = $("evaluation-log");
      if (!box.dataset.live) { box.textContent = ""; box.dataset.live = "1"; }
      box.textContent += (box.textContent ? "\n" : "") + event.message;
    },
    status(event) {
      const pill = $("status");
      pill.className = `status ${event.status}`;
      pill.textContent = event.label || event.status;
      if (event.status === "done" || event.status === "failed" || event.status === "aborted") window.location.reload();
    },
  }, () => { delete $("evaluation-log").dataset.live; });
})();
