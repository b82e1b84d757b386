// Disable a form's submit buttons once it is sent, so a double click posts
// once. The server is the real guard (submission keys, service rules); this
// only spares the user a confusing second answer.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") {
    return;
  }
  window.setTimeout(function () {
    form.querySelectorAll("button[type=submit], input[type=submit]").forEach(function (button) {
      button.disabled = true;
    });
  }, 0);
});

// Bring the page back to its first form error after a rejected submission.
document.addEventListener("DOMContentLoaded", function () {
  var error = document.querySelector(".form .alert-error, .form .has-error");
  if (error) {
    error.scrollIntoView({ block: "center" });
  }
});
