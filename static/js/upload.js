// The upload panel of a participant's images page: files dropped on the
// panel or chosen in its file input are posted one at a time to the API
// (XMLHttpRequest, for the progress events), each with its own progress bar
// and then its own answer: accepted, duplicate, or rejected with the reason.
// Without JavaScript the same form posts to the page, which answers the same.
// Files go one after another: the server locks the participant for each.
(function () {
  "use strict";

  function csrfToken(form) {
    var field = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (field && field.value) {
      return field.value;
    }
    var meta = document.querySelector("meta[name=csrf-token]");
    if (meta) {
      return meta.getAttribute("content");
    }
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function sizeLabel(bytes) {
    if (bytes >= 1024 * 1024) {
      return (bytes / (1024 * 1024)).toFixed(1) + " MB";
    }
    if (bytes >= 1024) {
      return (bytes / 1024).toFixed(1) + " KB";
    }
    return bytes + " bytes";
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = text;
    }
    return node;
  }

  function Item(list, file) {
    this.node = element("li", "upload-item upload-waiting");
    var line = element("div", "upload-line");
    this.name = element("span", "upload-name", file.name);
    this.progress = element("progress");
    this.progress.max = 100;
    this.progress.value = 0;
    this.progress.setAttribute("aria-label", "Upload of " + file.name);
    this.status = element("span", "badge upload-status", "waiting");
    this.size = element("span", "small muted", sizeLabel(file.size));
    line.appendChild(this.name);
    line.appendChild(this.size);
    line.appendChild(this.progress);
    line.appendChild(this.status);
    this.line = line;
    this.node.appendChild(line);
    list.appendChild(this.node);
  }

  Item.prototype.state = function (state, label) {
    this.node.className = "upload-item upload-" + state;
    this.status.className = "badge upload-status upload-status-" + state;
    this.status.textContent = label || state;
  };

  Item.prototype.show = function (result, imageUrl) {
    this.progress.value = 100;
    this.state(result.status);
    if (result.image_id) {
      var link = element("a", null, "Image " + result.image_id);
      link.href = imageUrl.replace(/\/0\/$/, "/" + result.image_id + "/");
      this.line.appendChild(link);
    }
    if (result.reason) {
      this.node.appendChild(element("div", "upload-reason", result.reason));
    }
    (result.warnings || []).forEach(function (warning) {
      this.node.appendChild(element("div", "upload-warning", warning));
    }, this);
  };

  Item.prototype.fail = function (reason) {
    this.state("rejected");
    this.node.appendChild(element("div", "upload-reason", reason));
  };

  function errorText(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body.detail) {
        return body.detail;
      }
      if (body.file) {
        return [].concat(body.file).join(" ");
      }
    } catch (ignored) {
      // not JSON: fall through
    }
    if (xhr.status === 0) {
      return "The connection was lost; the file may not have arrived. Try again.";
    }
    return "The server answered " + xhr.status + "; the file was not taken.";
  }

  function Panel(form) {
    this.form = form;
    this.url = form.getAttribute("data-upload-url");
    this.imageUrl = form.getAttribute("data-image-url");
    this.maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    this.maxLabel = form.getAttribute("data-max-label") || sizeLabel(this.maxBytes);
    this.input = form.querySelector("input[type=file]");
    this.list = document.querySelector("[data-upload-results]");
    this.done = document.querySelector("[data-upload-done]");
    this.zone = form.querySelector("[data-dropzone]");
    this.queue = [];
    this.busy = false;
    this.accepted = 0;
  }

  Panel.prototype.add = function (files) {
    Array.prototype.forEach.call(files, function (file) {
      var item = new Item(this.list, file);
      if (this.maxBytes && file.size > this.maxBytes) {
        // The server refuses it too; sending it would only waste the wait.
        item.fail(
          "The file is " + sizeLabel(file.size) + ", over the limit of " + this.maxLabel +
            " for one image; it was not sent."
        );
        return;
      }
      this.queue.push({ file: file, item: item });
    }, this);
    this.next();
  };

  Panel.prototype.next = function () {
    if (this.busy) {
      return;
    }
    var job = this.queue.shift();
    if (!job) {
      if (this.done && this.accepted > 0) {
        this.done.hidden = false;
      }
      return;
    }
    this.busy = true;
    this.send(job.file, job.item);
  };

  Panel.prototype.send = function (file, item) {
    var panel = this;
    var xhr = new XMLHttpRequest();
    var data = new FormData();
    data.append("file", file, file.name);
    item.state("uploading");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        item.progress.value = Math.round((100 * event.loaded) / event.total);
      }
    });
    xhr.upload.addEventListener("load", function () {
      item.progress.value = 100;
      item.state("processing", "checking…");
    });
    xhr.addEventListener("loadend", function () {
      if (xhr.status === 200 || xhr.status === 201) {
        var results = [];
        try {
          results = JSON.parse(xhr.responseText);
        } catch (ignored) {
          results = [];
        }
        if (results.length) {
          item.show(results[0], panel.imageUrl);
          if (results[0].status === "accepted") {
            panel.accepted += 1;
          }
        } else {
          item.fail("The server gave no result for this file.");
        }
      } else {
        item.fail(errorText(xhr));
      }
      panel.busy = false;
      panel.next();
    });
    xhr.open("POST", this.url);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(this.form));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.send(data);
  };

  Panel.prototype.bind = function () {
    var panel = this;
    this.form.classList.add("upload-enhanced");
    this.input.addEventListener("change", function () {
      if (panel.input.files.length) {
        panel.add(panel.input.files);
        panel.input.value = "";
      }
    });
    this.form.addEventListener("submit", function (event) {
      // Handled here: the page-wide handler that disables submit buttons
      // after a post must not see it, or the button stays disabled.
      event.preventDefault();
      event.stopPropagation();
      if (panel.input.files.length) {
        panel.add(panel.input.files);
        panel.input.value = "";
      }
    });
    ["dragenter", "dragover"].forEach(function (name) {
      panel.zone.addEventListener(name, function (event) {
        event.preventDefault();
        panel.zone.classList.add("dropzone-over");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      panel.zone.addEventListener(name, function (event) {
        event.preventDefault();
        panel.zone.classList.remove("dropzone-over");
      });
    });
    this.zone.addEventListener("drop", function (event) {
      if (event.dataTransfer && event.dataTransfer.files.length) {
        panel.add(event.dataTransfer.files);
      }
    });
  };

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form[data-upload-url]");
    if (form && window.FormData && window.XMLHttpRequest) {
      new Panel(form).bind();
    }
  });
})();
