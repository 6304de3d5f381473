// The network library's pages: the spec in the editor (read-only for who may only view it),
// Visualize on the detail page, and a confirmation before a network is removed.
(function () {
  const $ = (id) => document.getElementById(id);
  const spec = $("id_spec");
  if (spec) NetworkEditor.attach(spec, { readOnly: spec.dataset.readonly === "1" });

  const page = $("network-page");
  const button = $("visualize");
  if (page && button) {
    const csrf = document.querySelector("[name=csrfmiddlewaretoken]")?.value || "";
    button.addEventListener("click", () =>
      NetworkEditor.visualize(page.dataset.visualizeUrl, csrf, { network: "custom", spec: spec.value }, spec));
  }

  const remove = $("delete-form");
  remove?.addEventListener("submit", (event) => {
    if (!window.confirm(remove.dataset.confirm)) event.preventDefault();
  });
})();
