// The new-experiment form: Customize loads a network into the editor, Visualize shows
// it layer by layer with the error pinned to its row, the policy fields follow the
// chosen policy and the learning-rate chart follows every change.
const ExperimentForm = {
  start(urls) {
    const form = document.getElementById("experiment-form");
    const $ = (id) => document.getElementById(id);
    const value = (name) => (form.elements[name] ? form.elements[name].value : "");
    const csrf = form.elements.csrfmiddlewaretoken.value;

    // --- Network: standard or custom (static/js/network_editor.js) --------------------
    const specArea = form.elements.network_spec;
    NetworkEditor.attach(specArea);
    function showSpec() {
      $("spec-field").hidden = value("network") !== "custom";
      if (!$("spec-field").hidden) NetworkEditor.refresh(specArea);
    }
    // A table of the network chosen before would describe the wrong one.
    form.elements.network.addEventListener("change", () => { NetworkEditor.clear(); showSpec(); });
    showSpec();

    async function loadSpec(kind, id) {
      const params = new URLSearchParams({ [kind]: id });
      if (kind === "network" && value("dataset")) params.set("dataset", value("dataset"));
      const response = await fetch(`${urls.specUrl}?${params}`);
      if (!response.ok) return;
      const data = await response.json();
      NetworkEditor.setValue(specArea, data.spec);
      form.elements.network.value = "custom";
      showSpec();
      visualize();
    }
    $("customize-from").addEventListener("change", (event) => {
      const [kind, id] = event.target.value.split(":");
      event.target.value = "";
      if (kind) loadSpec(kind, id);
    });
    // "Train with it" in the network library opens this page with ?saved=<id>.
    const saved = new URLSearchParams(window.location.search).get("saved");
    if (saved && /^\d+$/.test(saved)) loadSpec("saved", saved);

    function visualize() {
      const crop = parseInt(value("crop_size"), 10);
      const payload = {
        network: value("network"), spec: value("network_spec"), dataset: value("dataset"),
        crop_size: Number.isFinite(crop) ? crop : null,
      };
      return NetworkEditor.visualize(urls.visualizeUrl, csrf, payload, specArea);
    }
    $("visualize").addEventListener("click", visualize);

    // --- Save to the library: a dialog for its name, description and sharing -----------
    const dialog = $("save-network-dialog");
    const saveForm = $("save-network-form");
    $("save-network").addEventListener("click", () => {
      for (const p of saveForm.querySelectorAll(".error")) { p.hidden = true; p.textContent = ""; }
      dialog.showModal();
    });
    $("save-network-cancel").addEventListener("click", () => dialog.close());
    saveForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = new URLSearchParams(new FormData(saveForm));
      body.set("spec", value("network_spec"));
      body.set("csrfmiddlewaretoken", csrf);
      const response = await fetch(urls.saveUrl, { method: "POST", body, headers: { Accept: "application/json" } });
      const data = await response.json();
      for (const p of saveForm.querySelectorAll(".error")) { p.hidden = true; p.textContent = ""; }
      if (response.ok) {
        dialog.close();
        saveForm.reset();
        const done = $("save-network-status");
        done.textContent = `Saved “${data.name}” to the network library.`;
        return;
      }
      // Each error beside its field; the spec's (it lives on this page) and any other at the top.
      for (const [name, errors] of Object.entries(data.errors)) {
        const target = $(`save-error-${name}`) || $("save-error-__all__");
        target.textContent = errors.map((e) => (name === "spec" ? `The network: ${e.message}` : e.message)).join(" ");
        target.hidden = false;
      }
    });

    // --- A sweep: one experiment per learning rate × batch size ------------------------
    // As training/forms.py's parse_values reads the lists: commas or semicolons, repeats once.
    function listLength(text) {
      const parts = text.split(/[,;]/).map((p) => p.trim()).filter(Boolean);
      return new Set(parts.map((p) => (Number.isFinite(Number(p)) ? String(Number(p)) : p))).size;
    }
    function showSweepCount() {
      const note = $("sweep-count");
      if (!note) return;
      const rates = listLength(value("learning_rates"));
      const sizes = listLength(value("batch_sizes"));
      const count = rates * sizes;
      const max = Number(note.dataset.max);
      const what = count > 1 ? `${count} experiments, a sweep (${rates} learning rate${rates === 1 ? "" : "s"} × ${sizes} batch size${sizes === 1 ? "" : "s"})` : `${count} experiment`;
      note.textContent = count === 0
        ? "Give at least one learning rate and one batch size."
        : `This creates ${what}.${count > max ? ` A sweep may have at most ${max}.` : ""}`;
      note.classList.toggle("error", count === 0 || count > max);
    }
    form.elements.learning_rates.addEventListener("input", showSweepCount);
    form.elements.batch_sizes.addEventListener("input", showSweepCount);
    showSweepCount();

    // --- Solver and policy fields that apply -----------------------------------------
    const policyFields = {
      fixed: [], step: ["step_size", "step_gamma"], multistep: ["multistep_values", "multistep_gamma"],
      exp: ["exp_gamma"], inv: ["inv_gamma", "inv_power"], poly: ["poly_power"], sigmoid: ["sigmoid_step", "sigmoid_gamma"],
      cosine: [],
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
    let previewed = 0; // the number of the latest preview asked for: an older answer is not drawn
    async function preview() {
      const mine = ++previewed;
      const names = ["learning_rates", "batch_sizes", "epochs", "batch_accumulation", "dataset", "lr_policy",
        "step_size", "step_gamma", "multistep_values", "multistep_gamma", "exp_gamma", "inv_gamma", "inv_power",
        "poly_power", "sigmoid_step", "sigmoid_gamma", "warmup"];
      const params = new URLSearchParams(names.map((n) => [n, value(n)]));
      const response = await fetch(`${urls.previewUrl}?${params}`);
      const data = await response.json();
      if (mine !== previewed) return;
      const error = $("lr-preview-error");
      error.hidden = response.ok;
      error.textContent = data.error || "";
      if (!response.ok) return;
      chart.data.datasets[0].data = data.points.map(([x, y]) => ({ x, y }));
      chart.update();
    }
    form.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(preview, 250); });
    form.addEventListener("change", () => { showRelevant(); preview(); showRecipe(); });

    // --- Default recipe: solver, rate and schedule for the network and the run's length
    // A new network fills in its recipe (training/recipes.py); so does a new number of
    // epochs, unless the fields were changed from the recipe (those changes are kept).
    // The sentence under the chart says what will run, or that the fields differ from it.
    let recipe = null;
    let asked = 0; // the number of the latest recipe asked for: an older answer is not applied
    async function fetchRecipe() {
      const number = ++asked;
      const params = new URLSearchParams({ recipe: "1", network: value("network"), epochs: value("epochs") });
      const response = await fetch(`${urls.previewUrl}?${params}`);
      const answer = response.ok ? await response.json() : null;
      return number === asked ? answer : undefined;
    }
    function follows(r) {
      return Object.entries(r.fields).every(([name, v]) => {
        const field = form.elements[name];
        const number = parseFloat(field.value);
        return field.value === String(v) || (typeof v === "number" && number === v);
      });
    }
    function showRecipe() {
      const note = $("recipe-summary");
      if (!recipe || !note) return;
      note.textContent = follows(recipe) ? recipe.summary : `Changed from the default. ${recipe.summary}`;
      note.hidden = false;
    }
    async function applyRecipe(always) {
      const previous = recipe;
      const answer = await fetchRecipe();
      if (answer === undefined) return; // a later change asked again
      recipe = answer;
      if (!recipe) return;
      // Whether the fields still follow the old recipe is asked now, after the answer came:
      // what the person typed meanwhile is theirs and stays.
      if (always || (previous && follows(previous))) {
        for (const [name, v] of Object.entries(recipe.fields)) form.elements[name].value = v;
      }
      showRelevant(); preview(); showRecipe();
    }
    form.elements.network.addEventListener("change", () => applyRecipe(true));
    form.elements.epochs.addEventListener("change", () => applyRecipe(false));
    showRelevant();
    preview();
    fetchRecipe().then((answer) => {
      if (answer !== undefined) recipe = answer;
      showRecipe();
    });
  },
};

// The page names its URLs on the form (data-spec-url…). Not through form.dataset: the form's
// "dataset" field answers to that name.
(function () {
  const form = document.getElementById("experiment-form");
  const url = (name) => form.getAttribute(`data-${name}-url`);
  ExperimentForm.start({ specUrl: url("spec"), visualizeUrl: url("visualize"), previewUrl: url("preview"), saveUrl: url("save") });
})();
