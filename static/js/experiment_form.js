// The new-experiment form: Customize loads a network into the editor, Visualize shows
// it layer by layer with the error pinned to its row, the policy fields follow the
// chosen policy and the learning-rate chart follows every change.
const ExperimentForm = {
  start(urls) {
    const form = document.getElementById("experiment-form");
    const $ = (id) => document.getElementById(id);
    const value = (name) => (form.elements[name] ? form.elements[name].value : "");
    const csrf = form.elements.csrfmiddlewaretoken.value;

    // --- Network: standard or custom -------------------------------------------------
    function showSpec() {
      $("spec-field").hidden = value("network") !== "custom";
    }
    form.elements.network.addEventListener("change", showSpec);
    showSpec();

    $("customize-from").addEventListener("change", async (event) => {
      const [kind, id] = event.target.value.split(":");
      if (!kind) return;
      const params = new URLSearchParams({ [kind]: id });
      if (kind === "network" && value("dataset")) params.set("dataset", value("dataset"));
      const response = await fetch(`${urls.specUrl}?${params}`);
      if (!response.ok) return;
      const data = await response.json();
      form.elements.network_spec.value = data.spec;
      form.elements.network.value = "custom";
      showSpec();
      event.target.value = "";
      visualize();
    });

    function format(n) {
      return n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
    }

    async function visualize() {
      const crop = parseInt(value("crop_size"), 10);
      const response = await fetch(urls.visualizeUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({
          network: value("network"),
          spec: value("network_spec"),
          dataset: value("dataset"),
          crop_size: Number.isFinite(crop) ? crop : null,
        }),
      });
      const data = await response.json();
      const body = $("network-table").querySelector("tbody");
      body.innerHTML = "";
      for (const row of data.rows || []) {
        const tr = body.insertRow();
        tr.dataset.path = row.path;
        // Names come from a spec someone wrote: text, never markup.
        const cell = tr.insertCell();
        cell.textContent = row.name || row.path;
        cell.style.paddingLeft = `${8 + row.depth * 18}px`;
        tr.insertCell().textContent = row.type + (row.detail ? ` ${row.detail}` : "");
        tr.insertCell().textContent = row.output_shape ? row.output_shape.join(" × ") : "✗";
        const params = tr.insertCell(); params.className = "num"; params.textContent = format(row.params);
        const flops = tr.insertCell(); flops.className = "num"; flops.textContent = format(row.flops);
        if (data.error && data.error.layer === row.path) tr.classList.add("failed-layer");
      }
      $("total-params").textContent = format(data.total_params || 0);
      $("total-flops").textContent = format(data.total_flops || 0);
      const error = $("visualize-error");
      error.hidden = !data.error;
      error.textContent = data.error ? (data.error.layer ? `${data.error.layer}: ` : "") + data.error.message : "";
      $("visualization").hidden = false;
    }
    $("visualize").addEventListener("click", visualize);

    $("save-network").addEventListener("click", async () => {
      const name = window.prompt("Save this network to the library as:");
      if (!name) return;
      const body = new URLSearchParams({
        name, spec: value("network_spec"), visibility: value("visibility"), team: value("team"),
        csrfmiddlewaretoken: csrf,
      });
      const response = await fetch(urls.saveUrl, { method: "POST", body, headers: { Accept: "application/json" } });
      const data = await response.json();
      if (response.ok) {
        window.alert(`Saved “${data.name}” to the network library.`);
      } else {
        const errors = Object.entries(data.errors).map(([f, e]) => `${f}: ${e.map((x) => x.message).join(" ")}`);
        window.alert(`Not saved. ${errors.join(" ")}`);
      }
    });

    // --- Solver and policy fields that apply -----------------------------------------
    const policyFields = {
      fixed: [], step: ["step_size", "step_gamma"], multistep: ["multistep_values", "multistep_gamma"],
      exp: ["exp_gamma"], inv: ["inv_gamma", "inv_power"], poly: ["poly_power"], sigmoid: ["sigmoid_step", "sigmoid_gamma"],
    };
    const solverFields = {
      momentum: ["sgd", "nesterov"], rms_decay: ["rmsprop"], adadelta_decay: ["adadelta"],
      adam_beta1: ["adam", "adamw"], adam_beta2: ["adam", "adamw"], delta: ["adagrad", "rmsprop", "adadelta", "adam", "adamw"],
    };
    function showRelevant() {
      const all = new Set(Object.values(policyFields).flat());
      for (const name of all) {
        document.querySelector(`[data-field="${name}"]`).hidden = !policyFields[value("lr_policy")].includes(name);
      }
      for (const [name, solvers] of Object.entries(solverFields)) {
        document.querySelector(`[data-field="${name}"]`).hidden = !solvers.includes(value("solver"));
      }
      document.querySelector('[data-field="patience"]').hidden = !value("early_stopping");
    }

    // --- Sharing: no wider than the dataset and the pretrained weights ----------------
    // The server refuses anything wider with the reason; this only stops offering it.
    const sharing = JSON.parse($("sharing-data").textContent);
    const ORDER = ["private", "team", "organisation"];
    function offerSharing() {
      const sources = [sharing.datasets[value("dataset")], sharing.snapshots[value("pretrained")]].filter(Boolean);
      let widest = "organisation";
      let team = null;
      for (const [visibility, teamId] of sources) {
        const reach = visibility === "team" && teamId == null ? "private" : visibility;
        if (reach === "team" && team !== null && team !== teamId) widest = "private";
        if (ORDER.indexOf(reach) < ORDER.indexOf(widest)) widest = reach;
        if (reach === "team") team = teamId;
      }
      for (const option of form.elements.visibility.options) {
        option.disabled = ORDER.indexOf(option.value) > ORDER.indexOf(widest);
      }
      for (const option of form.elements.team.options) {
        option.disabled = widest === "team" && option.value !== "" && Number(option.value) !== team;
      }
      if (form.elements.visibility.selectedOptions[0]?.disabled) form.elements.visibility.value = "private";
      if (form.elements.team.selectedOptions[0]?.disabled) form.elements.team.value = "";
    }
    form.elements.dataset.addEventListener("change", offerSharing);
    form.elements.pretrained.addEventListener("change", offerSharing);
    offerSharing();

    // --- Learning-rate preview --------------------------------------------------------
    const chart = new Chart($("lr-preview"), {
      type: "line",
      data: { datasets: [{ label: "learning rate", data: [], borderColor: "#7c3aed", pointRadius: 0, stepped: true }] },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "epoch" } }, y: { beginAtZero: true } },
      },
    });
    let pending;
    async function preview() {
      const names = ["learning_rates", "batch_sizes", "epochs", "batch_accumulation", "dataset", "lr_policy",
        "step_size", "step_gamma", "multistep_values", "multistep_gamma", "exp_gamma", "inv_gamma", "inv_power",
        "poly_power", "sigmoid_step", "sigmoid_gamma"];
      const params = new URLSearchParams(names.map((n) => [n, value(n)]));
      const response = await fetch(`${urls.previewUrl}?${params}`);
      const data = await response.json();
      const error = $("lr-preview-error");
      error.hidden = response.ok;
      error.textContent = data.error || "";
      if (!response.ok) return;
      chart.data.datasets[0].data = data.points.map(([x, y]) => ({ x, y }));
      chart.update();
    }
    form.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(preview, 250); });
    form.addEventListener("change", () => { showRelevant(); preview(); });
    showRelevant();
    preview();
  },
};
