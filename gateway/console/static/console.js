// The console's little script: select-all boxes, a confirmation before bulk changes, optional auto-refresh.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const all of document.querySelectorAll("[data-select-all]")) {
    all.addEventListener("change", () => {
      for (const box of all.closest("form").querySelectorAll('input[name="ref"]')) box.checked = all.checked;
    });
  }
  for (const form of document.querySelectorAll("[data-confirm-selection]")) {
    form.addEventListener("submit", (event) => {
      const button = event.submitter;
      if (!button || !button.value) return;
      const [action, scope] = button.value.split("-");
      const count = scope === "matching" ? Number(button.dataset.count)
        : form.querySelectorAll('input[name="ref"]:checked').length;
      if (count === 0) { event.preventDefault(); alert("Select at least one item first."); return; }
      if (!confirm(`${action === "retry" ? "Retry" : "Discard"} ${count} item(s)? This is recorded in the audit log.`)) {
        event.preventDefault();
      }
    });
  }
  const refresh = document.querySelector("[data-autorefresh]");
  if (refresh) {
    refresh.checked = sessionStorage.getItem("autorefresh") === "on";
    let timer = null;
    const arm = () => {
      clearTimeout(timer);
      sessionStorage.setItem("autorefresh", refresh.checked ? "on" : "off");
      if (refresh.checked) timer = setTimeout(() => location.reload(), Number(refresh.dataset.autorefresh) * 1000);
    };
    refresh.addEventListener("change", arm);
    arm();
  }
});
