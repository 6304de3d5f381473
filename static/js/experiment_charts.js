// The experiment page's loss/accuracy and learning-rate charts at iteration resolution.
// The page renders the training curve already cut down (training/series.py: each series
// keeps its extremes) as json_script "steps-data", and the validations as "metrics-data";
// the socket's "steps" and "epoch" events extend them. Every point keeps its step and its
// wall-clock seconds, so the x axis switches between epochs and time without a fetch.
// Drag across a chart to zoom (the range is then fetched at full resolution from
// data-steps-url), shift-drag to pan, Reset to go back.
const ExperimentCharts = {
  create(history) {
    const $ = (id) => document.getElementById(id);
    const data = JSON.parse($("steps-data").textContent);
    const perEpoch = data.steps_per_epoch;
    const stepsUrl = $("chart-tools").dataset.stepsUrl;
    let mode = "epoch";
    let zoom = null; // {min, max} in the current x units
    let detail = null; // the zoomed range's points, fetched at full resolution
    let fetches = 0;

    const fromSeries = (s) => s.step.map((step, i) => ({ step, time: s.time[i], y: s.value[i] }));
    const overview = { loss: fromSeries(data.loss), accuracy: fromSeries(data.accuracy) };
    // Runs trained before the curve was stored per step have only their epochs' means.
    let trainFromEpochs = overview.loss.length === 0;
    let lastStep = data.loss.step.length ? data.loss.step[data.loss.step.length - 1] : 0;
    const validation = { loss: [], accuracy: [], epoch: [] };
    const rates = data.learning_rate.step.map((step, i) => ({ step, y: data.learning_rate.value[i] }));

    // Seconds at a step, read off the training curve; null for a step not taken yet.
    function timeAt(step) {
      const points = overview.loss;
      if (!points.length || step > points[points.length - 1].step) return null;
      let lo = 0;
      let hi = points.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (points[mid].step <= step) lo = mid; else hi = mid;
      }
      const a = points[lo];
      const b = points[hi];
      if (step <= a.step || b.step === a.step) return a.time;
      return a.time + ((step - a.step) / (b.step - a.step)) * (b.time - a.time);
    }
    // And the other way, for fetching a zoomed time range.
    function stepAt(x) {
      if (mode === "epoch") return x * perEpoch;
      const points = overview.loss;
      const after = points.findIndex((p) => p.time >= x);
      if (after <= 0) return after === 0 ? points[0].step : points.length ? points[points.length - 1].step : 0;
      const a = points[after - 1];
      const b = points[after];
      return a.step + ((x - a.time) / (b.time - a.time || 1)) * (b.step - a.step);
    }
    const xOf = (p) => (mode === "epoch" ? p.step / perEpoch : (p.time ?? timeAt(p.step)));
    const plot = (points, scale = 1) =>
      points.map((p) => ({ x: xOf(p), y: scale * p.y })).filter((p) => p.x != null);

    const xAxis = () => ({
      type: "linear",
      min: zoom ? zoom.min : 0,
      max: zoom ? zoom.max : undefined,
      title: { display: true, text: mode === "epoch" ? "epoch" : "wall clock" },
      ticks: mode === "epoch" ? {} : { callback: (value) => Format.seconds(value) },
    });
    const line = (label, color, axis, extra = {}) => ({
      label, data: [], borderColor: color, backgroundColor: color, yAxisID: axis, pointRadius: 0, borderWidth: 1.5, ...extra,
    });
    const common = {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      // Live points beyond the page's cut-down are thinned for drawing, extremes kept.
      plugins: { decimation: { enabled: true, algorithm: "min-max" } },
    };
    const metricsChart = new Chart($("metrics-chart"), {
      type: "line",
      data: {
        datasets: [
          line("train loss", "#93c5fd", "loss"),
          line("validation loss", "#16a34a", "loss", { pointRadius: 2, borderWidth: 2 }),
          line("train accuracy (%)", "#fdba74", "accuracy"),
          line("validation accuracy (%)", "#ea580c", "accuracy", { pointRadius: 2, borderWidth: 2 }),
        ],
      },
      options: {
        ...common,
        scales: {
          x: xAxis(),
          loss: { position: "left", title: { display: true, text: "loss" }, beginAtZero: true },
          accuracy: { position: "right", min: 0, max: 100, title: { display: true, text: "accuracy (%)" }, grid: { drawOnChartArea: false } },
        },
      },
    });
    const lrChart = new Chart($("lr-chart"), {
      type: "line",
      data: { datasets: [line("learning rate", "#7c3aed", "y", { stepped: true, borderWidth: 2 })] },
      options: { ...common, scales: { x: xAxis(), y: { beginAtZero: true } } },
    });

    function draw() {
      const train = detail || overview;
      const [trainLoss, valLoss, trainAccuracy, valAccuracy] = metricsChart.data.datasets;
      trainLoss.data = plot(train.loss);
      trainAccuracy.data = plot(train.accuracy, 100);
      valLoss.data = plot(validation.loss);
      valAccuracy.data = plot(validation.accuracy, 100);
      lrChart.data.datasets[0].data = plot(mode === "epoch" ? rates : ratesSoFar());
      for (const chart of [metricsChart, lrChart]) {
        chart.options.scales.x = xAxis();
        chart.update();
      }
      $("zoom-reset").disabled = !zoom;
    }

    // On the wall clock the schedule is known only as far as training got.
    function ratesSoFar() {
      const last = overview.loss.length ? overview.loss[overview.loss.length - 1].step : 0;
      const taken = rates.filter((p) => p.step <= last);
      if (taken.length) taken.push({ step: last, y: taken[taken.length - 1].y });
      return taken;
    }

    function addEpoch(event) {
      const step = Math.round(event.epoch * perEpoch);
      const time = event.wall ?? timeAt(step);
      if (event.val_loss != null) validation.loss.push({ step, time, y: event.val_loss });
      if (event.val_accuracy != null) validation.accuracy.push({ step, time, y: event.val_accuracy });
      if (trainFromEpochs && event.train_loss != null) overview.loss.push({ step, time, y: event.train_loss });
    }

    function addSteps(event) {
      if (trainFromEpochs) {
        overview.loss = [];
        trainFromEpochs = false;
      }
      for (const name of ["loss", "accuracy"]) {
        const points = overview[name];
        const last = points.length ? points[points.length - 1].step : 0;
        fromSeries(event[name]).forEach((p) => { if (p.step > last) points.push(p); });
      }
      lastStep = Math.max(lastStep, ...event.loss.step);
    }

    // What the socket missed (before it opened, or while it was down): the points since the last one.
    async function refill() {
      const response = await fetch(`${stepsUrl}?start=${lastStep + 1}`);
      if (!response.ok) return;
      const missed = await response.json();
      if (missed.loss.step.some((step) => step > lastStep)) {
        addSteps(missed);
        draw();
      }
    }

    async function zoomTo(min, max, settled) {
      zoom = { min, max };
      if (!settled) { draw(); return; }
      detail = null;
      draw();
      const ticket = ++fetches;
      const start = Math.max(0, Math.floor(stepAt(min)));
      const end = Math.ceil(stepAt(max));
      const response = await fetch(`${stepsUrl}?start=${start}&end=${end}`);
      if (!response.ok || ticket !== fetches || !zoom) return;
      const range = await response.json();
      if (range.count) {
        detail = { loss: fromSeries(range.loss), accuracy: fromSeries(range.accuracy) };
        draw();
      }
    }

    function resetZoom() {
      zoom = detail = null;
      fetches++;
      draw();
    }

    // Drag to zoom on x, shift-drag to pan; either chart moves both.
    function dragZoom(chart) {
      const canvas = chart.canvas;
      const box = document.createElement("div");
      box.className = "zoom-box";
      box.hidden = true;
      canvas.parentElement.append(box);
      let from = null;
      canvas.addEventListener("pointerdown", (e) => {
        const area = chart.chartArea;
        if (e.offsetX < area.left || e.offsetX > area.right) return;
        canvas.setPointerCapture(e.pointerId);
        const scale = chart.scales.x;
        from = { x: e.offsetX, pan: e.shiftKey, min: scale.min, max: scale.max };
      });
      canvas.addEventListener("pointermove", (e) => {
        if (!from) return;
        const area = chart.chartArea;
        if (from.pan) {
          const shift = ((e.offsetX - from.x) / (area.right - area.left)) * (from.max - from.min);
          zoomTo(from.min - shift, from.max - shift, false);
          return;
        }
        const x = Math.max(area.left, Math.min(area.right, e.offsetX));
        Object.assign(box.style, {
          left: `${Math.min(from.x, x)}px`, width: `${Math.abs(x - from.x)}px`,
          top: `${area.top}px`, height: `${area.bottom - area.top}px`,
        });
        box.hidden = false;
      });
      canvas.addEventListener("pointerup", (e) => {
        if (!from) return;
        const start = from;
        from = null;
        box.hidden = true;
        const scale = chart.scales.x;
        if (start.pan) {
          if (zoom) zoomTo(zoom.min, zoom.max, true);
          return;
        }
        const [a, b] = [start.x, e.offsetX].sort((p, q) => p - q);
        if (b - a > 4) zoomTo(scale.getValueForPixel(a), scale.getValueForPixel(b), true);
      });
    }

    dragZoom(metricsChart);
    dragZoom(lrChart);
    $("zoom-reset").addEventListener("click", resetZoom);
    $("chart-x").addEventListener("change", (e) => {
      mode = e.target.value;
      resetZoom();
    });
    $("loss-log").addEventListener("change", (e) => {
      Object.assign(metricsChart.options.scales.loss, { type: e.target.checked ? "logarithmic" : "linear", beginAtZero: !e.target.checked });
      metricsChart.update();
    });

    history.forEach(addEpoch);
    draw();
    return {
      addEpoch(event) { addEpoch(event); draw(); },
      addSteps(event) { addSteps(event); draw(); },
      refill,
      metricsChart,
      lrChart,
    };
  },
};
