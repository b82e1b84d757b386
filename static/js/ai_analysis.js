// The "AI analysis" table of a participant's images page: polls the JSON
// state of each image's AI work (data-ai-status-url) and updates the table
// in place, adding a row for an image uploaded since the page was drawn,
// until every state is final. The answer carries the state of the work
// only, never the AI's output. An upload on the same page (upload.js
// changes its results list) starts the polling again.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var ERROR_POLL_MS = 10000;

  function Table(section) {
    this.section = section;
    this.url = section.getAttribute("data-ai-status-url");
    this.imageUrl = section.getAttribute("data-image-url");
    this.body = section.querySelector("[data-ai-rows]");
    this.empty = section.querySelector("[data-ai-empty]");
    this.timer = null;
    this.inFlight = false;
    this.again = false;
  }

  Table.prototype.row = function (image) {
    var row = this.body.querySelector("tr[data-ai-image='" + image.image + "']");
    if (row) {
      return row;
    }
    row = document.createElement("tr");
    row.setAttribute("data-ai-image", String(image.image));
    var imageCell = document.createElement("td");
    var link = document.createElement("a");
    link.href = this.imageUrl.replace(/\/0\/$/, "/" + image.image + "/");
    link.textContent = "Image " + image.image;
    imageCell.appendChild(link);
    var stateCell = document.createElement("td");
    var badge = document.createElement("span");
    badge.setAttribute("data-ai-state", "");
    stateCell.appendChild(badge);
    row.appendChild(imageCell);
    row.appendChild(stateCell);
    this.body.appendChild(row);
    return row;
  };

  Table.prototype.show = function (answer) {
    answer.images.forEach(function (image) {
      var row = this.row(image);
      var badge = row.querySelector("[data-ai-state]");
      row.setAttribute("data-ai-final", image.final ? "1" : "0");
      badge.className = "badge ai-state ai-state-" + image.state;
      badge.setAttribute("data-ai-state", image.state);
      badge.textContent = image.state_label;
    }, this);
    if (this.empty) {
      this.empty.hidden = answer.images.length > 0;
    }
    this.section.setAttribute("data-final", answer.final ? "1" : "0");
  };

  Table.prototype.schedule = function (delay) {
    var table = this;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(function () { table.poll(); }, delay);
  };

  Table.prototype.poll = function () {
    var table = this;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    fetch(this.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        table.inFlight = false;
        table.show(answer);
        if (table.again || !answer.final) {
          table.again = false;
          table.schedule(POLL_MS);
        }
      })
      .catch(function () {
        table.inFlight = false;
        table.schedule(ERROR_POLL_MS);
      });
  };

  Table.prototype.watchUploads = function () {
    var results = document.querySelector("[data-upload-results]");
    if (!results || !window.MutationObserver) {
      return;
    }
    var table = this;
    // An accepted file shows its image link once the server has taken it:
    // ask again shortly after the list last changed.
    new MutationObserver(function () { table.schedule(300); }).observe(results, {
      childList: true,
      subtree: true,
      characterData: true,
    });
  };

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.querySelector("section[data-ai-status-url]");
    if (!section || !window.fetch) {
      return;
    }
    var table = new Table(section);
    table.watchUploads();
    if (section.getAttribute("data-final") !== "1") {
      table.schedule(POLL_MS);
    }
  });
})();
