// crashbox web UI: small progressive enhancements. Every page works without this
// file; the Content-Security-Policy allows no other script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A filter <select> applies as soon as it changes.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () {
      if (select.form) select.form.requestSubmit();
    });
  });
  // Merges and unmerges ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
  // On a phone the filters start folded unless one is in use: the groups come first.
  var filters = document.querySelector("details.filterbox");
  if (filters && !filters.hasAttribute("data-active") &&
      window.matchMedia("(max-width: 760px)").matches) {
    filters.removeAttribute("open");
  }
  // "/" jumps to the search field, as in most triage tools.
  var search = document.getElementById("f-q");
  if (search) {
    document.addEventListener("keydown", function (event) {
      var tag = (event.target && event.target.tagName) || "";
      if (event.key === "/" && !/^(INPUT|SELECT|TEXTAREA)$/.test(tag)) {
        event.preventDefault();
        search.focus();
      }
    });
  }
});
