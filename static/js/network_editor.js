// The network editor, on the new-experiment page and in the network library: the spec's
// textarea becomes a CodeMirror editor (line numbers, YAML highlighting; JSON reads as YAML),
// and Visualize shows the network layer by layer, the error pinned to its row and its line.
// The textarea stays the form's field: every change is written back to it.
const NetworkEditor = {
  attach(textarea, { readOnly = false } = {}) {
    if (!window.CodeMirror || textarea.editor) return textarea.editor || null;
    const editor = CodeMirror.fromTextArea(textarea, {
      mode: "yaml", lineNumbers: true, indentUnit: 2, tabSize: 2, readOnly, viewportMargin: Infinity,
      // Tab indents with spaces: YAML refuses tabs.
      extraKeys: { Tab: (cm) => cm.replaceSelection("  ") },
    });
    editor.getWrapperElement().dataset.editorFor = textarea.id;
    editor.on("change", () => {
      editor.save();
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    });
    // Screen readers and tests find the editor by the field's label.
    const label = textarea.id && document.querySelector(`label[for="${textarea.id}"]`);
    if (label) editor.getInputField().setAttribute("aria-label", label.textContent.trim());
    textarea.editor = editor;
    return editor;
  },

  setValue(textarea, text) {
    if (textarea.editor) textarea.editor.setValue(text);
    else textarea.value = text;
  },

  // A hidden editor measures nothing: call this once its field is shown.
  refresh(textarea) {
    textarea.editor?.refresh();
  },

  markLine(textarea, line) {
    const editor = textarea.editor;
    if (!editor) return;
    if (editor.errorLine != null) editor.removeLineClass(editor.errorLine, "background", "cm-error-line");
    editor.errorLine = null;
    if (!line || line > editor.lineCount()) return;
    editor.errorLine = line - 1;
    editor.addLineClass(line - 1, "background", "cm-error-line");
    editor.scrollIntoView({ line: line - 1, ch: 0 }, 60);
  },

  format(n) {
    return n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);
  },

  // Which Visualize was asked for last: only its answer is drawn, so a slow answer for
  // the spec as it was never covers the answer for the spec as it is.
  asked: 0,

  // Forget a table that described another network (and any answer still on its way).
  clear() {
    NetworkEditor.asked += 1;
    const box = document.getElementById("visualization");
    if (!box) return;
    box.hidden = true;
    document.getElementById("network-table").tBodies[0].innerHTML = "";
    document.getElementById("total-params").textContent = "";
    document.getElementById("total-flops").textContent = "";
    document.getElementById("visualize-error").hidden = true;
  },

  // POST `payload` ({network, spec, dataset, crop_size}) to `url` and fill the page's
  // #visualization table; `textarea` (the spec's) gets the error's line marked.
  // Answers null when a later Visualize (or a clear) has overtaken this one.
  async visualize(url, csrf, payload, textarea) {
    const $ = (id) => document.getElementById(id);
    const mine = ++NetworkEditor.asked;
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(payload),
    });
    const data = await response.json();
    if (mine !== NetworkEditor.asked) return null;
    const body = $("network-table").tBodies[0];
    body.innerHTML = "";
    const format = NetworkEditor.format;
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
    const problem = data.error;
    error.hidden = !problem;
    error.textContent = problem
      ? `${problem.line ? `Line ${problem.line}: ` : ""}${problem.layer ? `${problem.layer}: ` : ""}${problem.message}`
      : "";
    if (textarea) NetworkEditor.markLine(textarea, problem ? problem.line : null);
    $("visualization").hidden = false;
    return data;
  },
};
