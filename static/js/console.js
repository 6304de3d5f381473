// The console: tick experiments, then Compare opens /experiments/compare/?ids=1,2,3 (the
// form's action). Without this script the form still works, with ids repeated.
(function () {
  const form = document.getElementById("compare-form");
  if (!form) return;
  const boxes = () => Array.from(document.querySelectorAll('input[form="compare-form"]:checked'));
  const button = form.querySelector("button");
  const status = document.getElementById("compare-status");
  function update() {
    const count = boxes().length;
    button.disabled = count < 2;
    status.textContent = count < 2 ? "Tick two or more experiments to compare them." : `${count} experiments ticked.`;
  }
  document.addEventListener("change", (event) => {
    if (event.target.matches('input[form="compare-form"]')) update();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.href = `${form.action}?ids=${boxes().map((box) => box.value).join(",")}`;
  });
  update();
})();
