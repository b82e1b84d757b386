// Progress bars of the reports page: each unfinished report's row polls its
// JSON status (data-report-status-url) and is updated in place; once done,
// the page is reloaded so the row gets its download link and data hash.
(function () {
  "use strict";
  var POLL_MS = 2000;

  function poll(row) {
    var url = row.getAttribute("data-report-status-url");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (state) {
        var bar = row.querySelector("[data-role=progress]");
        var status = row.querySelector("[data-role=status]");
        var message = row.querySelector("[data-role=message]");
        if (bar) { bar.value = state.progress; bar.textContent = state.progress + " %"; }
        if (status) { status.textContent = state.status_display; }
        if (message) { message.textContent = state.status === "failed" ? state.error : state.message; }
        if (state.finished) {
          row.setAttribute("data-report-finished", "1");
          if (bar) { bar.hidden = true; }
          if (state.status === "done") { window.location.reload(); }
          return;
        }
        window.setTimeout(function () { poll(row); }, POLL_MS);
      })
      .catch(function () {
        window.setTimeout(function () { poll(row); }, POLL_MS * 5);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var rows = document.querySelectorAll("tr[data-report-status-url][data-report-finished='0']");
    Array.prototype.forEach.call(rows, function (row) { poll(row); });
  });
})();
