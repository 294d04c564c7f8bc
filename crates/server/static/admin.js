// lwa-broker dashboard: the only script, served from /admin/static (the CSP allows no other).
// Copy buttons and confirmations; every page works without it.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy-button");
  if (!button) return;
  var field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  var done = function () { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, function () {});
  } else {
    done();
  }
});
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.classList.contains("confirm") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
