// The case report form of a case page (#read-form): drafts save themselves
// (a PUT to data-draft-api some 1.5 s after the last change) with the
// revision the page holds, so a second tab saving the same read gets a
// conflict instead of overwriting it; the reader's entries stay on the page
// whatever the answer. It also previews the computed scores (the server
// computes the ones that count) and, when the reader leaves "time spent"
// empty, fills it in with the time the page was visible when the read is
// signed. Signing and "Save draft" stay ordinary form posts.
(() => {
  "use strict";

  const DELAY_MS = 1500;
  // Controls that are not fields of the read.
  const NOT_FIELDS = new Set(["csrfmiddlewaretoken", "revision", "outline", "password", "action", "phase"]);
  const YES = new Set(["true", "yes"]);
  const NO = new Set(["false", "no"]);
  const INTEGER = /^[+-]?\d+$/;
  const SWEDE_ITEMS = ["swede_acetowhite", "swede_margins_surface", "swede_vessels", "swede_lesion_size", "swede_iodine"];
  const TIRADS_FEATURES = ["composition", "echogenicity", "shape", "margin", "echogenic_foci"];
  // ACR TI-RADS (Tessler et al. 2017): levels by points, and the size
  // thresholds in millimetres [FNA, follow-up] of TR3–TR5.
  const SIZE_THRESHOLDS_MM = { TR3: [25, 15], TR4: [15, 10], TR5: [10, 5] };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined && text !== null) {
      node.textContent = text;
    }
    return node;
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/["\\]/g, "\\$&");
  }

  // Times as the rest of the site shows them: in UTC.
  function clock(date) {
    const time = date.toLocaleTimeString("en-GB", {
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
      timeZone: "UTC",
    });
    return `${time} UTC`;
  }

  function csrfToken(form) {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) {
      return decodeURIComponent(match[1]);
    }
    const viewer = document.getElementById("viewer");
    if (viewer && viewer.dataset.csrf) {
      return viewer.dataset.csrf;
    }
    const field = form.querySelector('input[name="csrfmiddlewaretoken"]');
    return field ? field.value : "";
  }

  function tiradsLevel(points) {
    if (points === 0) {
      return "TR1";
    }
    if (points <= 2) {
      return "TR2";
    }
    if (points === 3) {
      return "TR3";
    }
    return points <= 6 ? "TR4" : "TR5";
  }

  class ReadForm {
    constructor(form) {
      this.form = form;
      this.api = form.dataset.draftApi;
      this.phase = form.dataset.phase;
      this.revisionInput = form.querySelector('input[name="revision"]');
      this.outlineInput = form.querySelector('input[name="outline"]');
      this.status = document.getElementById("save-status");
      this.statusClasses = this.status ? this.status.className : "";
      this.computed = document.getElementById("computed");
      this.timer = null;
      this.inFlight = null;
      this.again = false;
      this.conflict = false;
      this.submitting = false;
      this.lastSaved = JSON.stringify(this.payloadBody());
      this.visibleKey = `consilium:visible:${this.api}:${this.phase}`;
      this.visibleBefore = this.storedVisible();
      this.visibleMs = 0;
      this.visibleSince = document.visibilityState === "visible" ? performance.now() : null;
    }

    start() {
      if (!this.api || !this.phase) {
        return;
      }
      const changed = (event) => {
        const target = event.target;
        if (!(target instanceof Element) || !target.name || target.name === "password") {
          return;
        }
        if (target.name !== "outline" && NOT_FIELDS.has(target.name)) {
          return;
        }
        this.preview();
        this.schedule();
      };
      this.form.addEventListener("input", changed);
      this.form.addEventListener("change", changed);
      this.form.addEventListener("submit", (event) => this.submit(event));
      document.addEventListener("visibilitychange", () => this.visibility());
      window.addEventListener("pagehide", () => this.leave());
      this.preview();
    }

    // --- Values --------------------------------------------------------------------------

    controls() {
      return Array.from(this.form.elements).filter(
        (control) =>
          control.name &&
          !NOT_FIELDS.has(control.name) &&
          !["hidden", "password", "submit", "button", "reset", "file", "image"].includes(control.type) &&
          control.tagName !== "BUTTON" &&
          control.tagName !== "FIELDSET" &&
          control.tagName !== "OUTPUT",
      );
    }

    // The read as a JSON object: a group of checkboxes → the checked values,
    // a number → a Number, a yes/no select → true/false, a select of whole
    // numbers → a Number; empty fields are left out.
    values() {
      const data = {};
      const groups = new Map();
      for (const control of this.controls()) {
        if (!groups.has(control.name)) {
          groups.set(control.name, []);
        }
        groups.get(control.name).push(control);
      }
      for (const [name, controls] of groups) {
        const first = controls[0];
        if (first.type === "checkbox") {
          const checked = controls.filter((box) => box.checked).map((box) => box.value);
          const single = controls.length === 1 && ["on", "true", "yes"].includes(first.value.toLowerCase());
          if (single) {
            data[name] = first.checked;
          } else if (checked.length) {
            data[name] = checked;
          }
        } else if (first.type === "radio") {
          const chosen = controls.find((radio) => radio.checked);
          if (chosen && chosen.value !== "") {
            data[name] = this.typedChoice(controls.map((radio) => radio.value), chosen.value);
          }
        } else if (first.tagName === "SELECT") {
          if (first.multiple) {
            const chosen = Array.from(first.selectedOptions).map((option) => option.value).filter(Boolean);
            if (chosen.length) {
              data[name] = chosen;
            }
          } else if (first.value !== "") {
            data[name] = this.typedChoice(Array.from(first.options, (option) => option.value), first.value);
          }
        } else if (first.type === "number") {
          if (first.value.trim() !== "") {
            const number = Number(first.value);
            if (Number.isFinite(number)) {
              data[name] = number;
            }
          }
        } else if (first.value.trim() !== "") {
          data[name] = first.value;
        }
      }
      return data;
    }

    typedChoice(options, value) {
      const codes = options.filter((option) => option !== "").map((option) => option.toLowerCase());
      if (codes.length && codes.every((code) => YES.has(code) || NO.has(code))) {
        return YES.has(value.toLowerCase());
      }
      if (codes.length && codes.every((code) => INTEGER.test(code)) && INTEGER.test(value)) {
        return Number(value);
      }
      return value;
    }

    outline() {
      const text = this.outlineInput ? this.outlineInput.value.trim() : "";
      if (!text) {
        return null;
      }
      try {
        const value = JSON.parse(text);
        return value && typeof value === "object" && !Array.isArray(value) ? value : null;
      } catch {
        return null;
      }
    }

    revision() {
      const text = this.revisionInput ? this.revisionInput.value : this.form.dataset.revision;
      const number = Number(text);
      return Number.isInteger(number) ? number : 0;
    }

    setRevision(revision) {
      if (this.revisionInput) {
        this.revisionInput.value = String(revision);
      }
      this.form.dataset.revision = String(revision);
    }

    payloadBody() {
      return { data: this.values(), outline: this.outline() };
    }

    // --- Saving --------------------------------------------------------------------------

    schedule() {
      if (this.conflict || this.submitting) {
        return;
      }
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => {
        this.timer = null;
        this.save();
      }, DELAY_MS);
    }

    async save(options = {}) {
      if (this.conflict || (this.submitting && !options.keepalive)) {
        return;
      }
      if (this.inFlight) {
        this.again = true; // once this one is answered, with its new revision
        return;
      }
      const body = this.payloadBody();
      const text = JSON.stringify(body);
      if (text === this.lastSaved && !options.force) {
        return;
      }
      const request = fetch(this.api, {
        method: "PUT",
        credentials: "same-origin",
        keepalive: Boolean(options.keepalive),
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": csrfToken(this.form),
        },
        // No outline in the hidden input: the key is left out (the saved one stays).
        body: JSON.stringify({
          phase: this.phase,
          revision: this.revision(),
          data: body.data,
          ...(body.outline === null ? {} : { outline: body.outline }),
        }),
      });
      if (options.keepalive) {
        return; // the page is going away; nobody would see the answer
      }
      this.say("Saving the draft…", "saving");
      this.inFlight = this.answer(request, text);
      try {
        await this.inFlight;
      } finally {
        this.inFlight = null;
      }
      if (this.again && !this.conflict && !this.submitting) {
        this.again = false;
        this.save();
      }
      this.again = false;
    }

    async answer(request, text) {
      let response;
      try {
        response = await request;
      } catch {
        this.say("The draft could not be saved: the server did not answer. Your entries are still on this page.", "error");
        return;
      }
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      if (response.ok && body) {
        this.clearErrors();
        if (Number.isInteger(body.revision)) {
          this.setRevision(body.revision);
        }
        this.lastSaved = text;
        const saved = body.saved_at ? new Date(body.saved_at) : new Date();
        this.say(`Draft saved at ${clock(Number.isNaN(saved.getTime()) ? new Date() : saved)}`, "saved");
        return;
      }
      const detail = body && typeof body.detail === "string" ? body.detail : "";
      if (response.status === 409) {
        this.showConflict(detail, body && body.current);
      } else if (response.status === 400) {
        this.showErrors(body, detail);
      } else {
        this.say(
          `The draft could not be saved (error ${response.status})${detail ? `: ${detail}` : "."} ` +
            "Your entries are still on this page.",
          "error",
        );
      }
    }

    say(text, state, ...extra) {
      if (!this.status) {
        return;
      }
      this.status.className = `${this.statusClasses} save-status save-status-${state}`.trim();
      if (state === "conflict") {
        this.status.classList.add("alert", "alert-error");
        this.status.setAttribute("role", "alert");
      } else {
        this.status.removeAttribute("role");
      }
      this.status.replaceChildren(text, ...extra);
    }

    // --- Conflicts -----------------------------------------------------------------------

    showConflict(detail, current) {
      this.conflict = true;
      window.clearTimeout(this.timer);
      const message =
        detail || "This read was saved elsewhere (another tab or window); your changes were not saved.";
      const load = el("button", "btn save-status-action", "Load the saved version");
      load.type = "button";
      load.addEventListener("click", () => this.loadSaved(current));
      const extra = [" ", load];
      if (current && Number.isInteger(current.revision)) {
        const keep = el("button", "btn save-status-action", "Save my entries over it");
        keep.type = "button";
        keep.addEventListener("click", () => {
          this.conflict = false;
          this.setRevision(current.revision);
          this.save({ force: true });
        });
        extra.push(" ", keep);
      }
      this.say(`${message} Your entries are still on this page.`, "conflict", ...extra);
    }

    loadSaved(current) {
      if (!current || typeof current !== "object" || !current.data || typeof current.data !== "object") {
        window.location.reload(); // the server's version is whatever the page shows now
        return;
      }
      this.fill(current.data);
      if (this.outlineInput) {
        const outline = current.outline;
        this.outlineInput.value =
          outline && typeof outline === "object" && Object.keys(outline).length ? JSON.stringify(outline) : "";
        this.outlineInput.dispatchEvent(new CustomEvent("outline:load", { bubbles: true }));
      }
      if (Number.isInteger(current.revision)) {
        this.setRevision(current.revision);
      }
      this.conflict = false;
      this.clearErrors();
      this.lastSaved = JSON.stringify(this.payloadBody());
      const saved = current.saved_at ? new Date(current.saved_at) : null;
      this.say(
        saved && !Number.isNaN(saved.getTime())
          ? `The version saved at ${clock(saved)} is loaded.`
          : "The saved version is loaded.",
        "saved",
      );
      this.preview();
    }

    // Put a read's data into the form's controls (fields it lacks emptied).
    fill(data) {
      const text = (value) => (typeof value === "boolean" ? String(value) : value === null ? "" : String(value));
      for (const control of this.controls()) {
        const value = data[control.name];
        if (control.type === "checkbox") {
          const list = Array.isArray(value) ? value.map(text) : value === undefined ? [] : [text(value)];
          control.checked = list.includes(control.value) || (value === true && list.length === 1);
        } else if (control.type === "radio") {
          control.checked = value !== undefined && text(value) === control.value;
        } else if (control.tagName === "SELECT") {
          let wanted = value === undefined ? "" : text(value);
          if (typeof value === "boolean") {
            const codes = Array.from(control.options, (option) => option.value);
            wanted = codes.find((code) => (value ? YES : NO).has(code.toLowerCase())) || wanted;
          }
          control.value = wanted;
        } else {
          control.value = value === undefined ? "" : text(value);
        }
      }
    }

    // --- Field errors --------------------------------------------------------------------

    // {"errors": {field: message}}, {"detail", "field"} or {field: [messages]}.
    static fieldErrors(body) {
      if (!body || typeof body !== "object") {
        return {};
      }
      if (body.errors && typeof body.errors === "object") {
        return body.errors;
      }
      if (typeof body.field === "string" && body.field && typeof body.detail === "string") {
        return { [body.field]: body.detail };
      }
      const errors = {};
      for (const [name, value] of Object.entries(body)) {
        if (Array.isArray(value) && value.every((item) => typeof item === "string")) {
          errors[name] = value.join(" ");
        }
      }
      return errors;
    }

    showErrors(body, detail) {
      this.clearErrors();
      const others = [];
      for (const [name, raw] of Object.entries(ReadForm.fieldErrors(body))) {
        const message = Array.isArray(raw) ? raw.join(" ") : String(raw);
        const control = name === "outline" ? null : this.form.querySelector(`[name="${cssEscape(name)}"]`);
        if (!control) {
          others.push(message);
          continue;
        }
        const box = control.closest(".field") || control.parentElement;
        // The field's own message slot (#error-<name>) when the page has one.
        let note = box.querySelector(`#error-${cssEscape(name)}`);
        if (note) {
          note.dataset.textBefore = note.textContent;
          note.classList.add("js-save-error-slot");
          note.textContent = message;
        } else {
          note = el("p", "field-error js-save-error", message);
          note.id = `save-error-${name}`;
          box.append(note);
        }
        if (!box.classList.contains("has-error")) {
          box.classList.add("has-error", "js-has-error");
        }
        for (const input of this.form.querySelectorAll(`[name="${cssEscape(name)}"]`)) {
          const described = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
          if (input.dataset.describedBefore === undefined) {
            input.dataset.describedBefore = described.join(" ");
            input.dataset.invalidBefore = input.getAttribute("aria-invalid") || "";
          }
          if (!described.includes(note.id)) {
            input.setAttribute("aria-describedby", [...described, note.id].join(" "));
          }
          input.setAttribute("aria-invalid", "true");
        }
      }
      const summary = others.length ? others.join(" ") : detail;
      this.say(
        `The draft was not saved${summary ? `: ${summary}` : "; see the messages next to the fields."}`,
        "error",
      );
    }

    clearErrors() {
      for (const note of this.form.querySelectorAll(".js-save-error")) {
        note.remove();
      }
      for (const note of this.form.querySelectorAll(".js-save-error-slot")) {
        note.textContent = note.dataset.textBefore || "";
        note.classList.remove("js-save-error-slot");
        delete note.dataset.textBefore;
      }
      for (const box of this.form.querySelectorAll(".js-has-error")) {
        box.classList.remove("has-error", "js-has-error");
      }
      for (const input of this.form.querySelectorAll("[data-described-before]")) {
        if (input.dataset.describedBefore) {
          input.setAttribute("aria-describedby", input.dataset.describedBefore);
        } else {
          input.removeAttribute("aria-describedby");
        }
        if (input.dataset.invalidBefore) {
          input.setAttribute("aria-invalid", input.dataset.invalidBefore);
        } else {
          input.removeAttribute("aria-invalid");
        }
        delete input.dataset.describedBefore;
        delete input.dataset.invalidBefore;
      }
    }

    // --- Leaving and signing -------------------------------------------------------------

    visibility() {
      const now = performance.now();
      if (document.visibilityState === "visible") {
        this.visibleSince = now;
        return;
      }
      if (this.visibleSince !== null) {
        this.visibleMs += now - this.visibleSince;
        this.visibleSince = null;
      }
      this.storeVisible();
      if (this.timer) {
        window.clearTimeout(this.timer);
        this.timer = null;
        this.save();
      }
    }

    leave() {
      this.storeVisible();
      if (this.timer && !this.submitting) {
        window.clearTimeout(this.timer);
        this.timer = null;
        this.save({ keepalive: true });
      }
    }

    // Seconds this phase of the read has been on screen, across reloads of
    // the page in this tab.
    visibleSeconds() {
      const running = this.visibleSince === null ? 0 : performance.now() - this.visibleSince;
      return this.visibleBefore + (this.visibleMs + running) / 1000;
    }

    storedVisible() {
      try {
        const value = Number(window.sessionStorage.getItem(this.visibleKey));
        return Number.isFinite(value) && value > 0 ? value : 0;
      } catch {
        return 0;
      }
    }

    storeVisible() {
      try {
        window.sessionStorage.setItem(this.visibleKey, String(this.visibleSeconds()));
      } catch {
        // no storage: the time of this page alone is counted
      }
    }

    submit(event) {
      this.submitting = true;
      window.clearTimeout(this.timer);
      this.timer = null;
      const submitter = event.submitter;
      if (submitter && submitter.name === "action" && submitter.value === "sign") {
        this.fillTimeSpent();
      }
      if (this.inFlight) {
        // A draft save is under way: its answer changes the revision this
        // post must carry, so the post waits for it.
        event.preventDefault();
        this.inFlight.finally(() => {
          for (const button of this.form.querySelectorAll("button[type=submit], input[type=submit]")) {
            button.disabled = false;
          }
          this.form.requestSubmit(submitter || undefined);
        });
        return;
      }
      this.storeVisible();
      window.setTimeout(() => {
        // A post the browser did not send (a field it refused) leaves the page open.
        if (document.visibilityState === "visible") {
          this.submitting = false;
        }
      }, 5000);
    }

    fillTimeSpent() {
      const field = this.form.querySelector('[name="time_spent_s"]');
      if (!field || field.value.trim() !== "") {
        return;
      }
      let seconds = Math.max(1, Math.round(this.visibleSeconds()));
      const max = Number(field.getAttribute("max"));
      if (Number.isFinite(max) && max > 0) {
        seconds = Math.min(seconds, max);
      }
      field.value = String(seconds);
    }

    // --- Computed scores (a preview; the server computes the ones that count) ------------

    preview() {
      if (!this.computed) {
        return;
      }
      const data = this.values();
      if (SWEDE_ITEMS.some((name) => this.form.querySelector(`[name="${name}"]`))) {
        const items = SWEDE_ITEMS.map((name) => data[name]);
        const complete = items.every((value) => Number.isInteger(value));
        this.show("swede_total", complete ? String(items.reduce((sum, value) => sum + value, 0)) : "—");
      }
      if (TIRADS_FEATURES.every((name) => this.form.querySelector(`[name="${name}"]`))) {
        this.previewTirads(data);
      }
    }

    // Points of the chosen option of a feature, from the data-points that
    // the page puts on each option; null when not chosen or not known.
    pointsOf(name) {
      const controls = Array.from(this.form.querySelectorAll(`[name="${name}"]`));
      const chosen = [];
      for (const control of controls) {
        if (control.tagName === "SELECT") {
          chosen.push(...Array.from(control.selectedOptions).filter((option) => option.value !== ""));
        } else if (control.checked) {
          chosen.push(control);
        }
      }
      if (!chosen.length) {
        return null;
      }
      let total = 0;
      for (const option of chosen) {
        const points = Number(option.dataset.points);
        if (option.dataset.points === undefined || !Number.isInteger(points)) {
          return null;
        }
        total += points;
      }
      return total;
    }

    previewTirads(data) {
      const hasPoints = this.form.querySelector('[name="composition"] [data-points], [name="composition"][data-points]');
      if (!hasPoints) {
        return; // the page gives no points to count with
      }
      let points = null;
      if (data.composition === "spongiform") {
        points = 0; // a spongiform nodule scores 0 whatever else is recorded
      } else if (Array.isArray(data.echogenic_foci) && data.echogenic_foci.includes("none") && data.echogenic_foci.length > 1) {
        points = null; // "none" with another focus: the server refuses it
      } else {
        const each = TIRADS_FEATURES.map((name) => this.pointsOf(name));
        points = each.every((value) => value !== null) ? each.reduce((sum, value) => sum + value, 0) : null;
      }
      const level = points === null ? null : tiradsLevel(points);
      this.show("points", points === null ? "—" : String(points));
      this.show("category", level || "—", level);
      const diameter = data.largest_diameter_mm;
      let fna = "—";
      if (level && Number.isFinite(diameter) && diameter > 0) {
        const thresholds = SIZE_THRESHOLDS_MM[level];
        fna = !thresholds ? "none" : diameter >= thresholds[0] ? "fna" : diameter >= thresholds[1] ? "follow-up" : "none";
      }
      this.show("fna", fna, fna === "—" ? null : fna);
    }

    // Write a score into #computed: the element marked data-score="key"
    // (its data-label-<code> attribute, when there is one, gives the words).
    show(key, value, code = null) {
      const target = this.computed.querySelector(`[data-score="${key}"]`);
      if (!target) {
        return;
      }
      const words = code ? target.getAttribute(`data-label-${code}`) : null;
      target.textContent = words || value;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("read-form");
    if (!form || !form.dataset.draftApi) {
      return;
    }
    const readForm = new ReadForm(form);
    readForm.start();
    // For other scripts of the page: save the draft now.
    window.consiliumReadForm = { saveNow: () => readForm.save(), saveSoon: () => readForm.schedule() };
  });
})();
