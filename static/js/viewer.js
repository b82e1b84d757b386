// The reading viewer of a case page (#viewer): the case's images on a
// canvas with zoom and pan, window/level for grey ultrasound, a frame slider
// for cine loops, a caliper measuring in millimetres from the stored pixel
// spacing, and a lesion-outline tool whose polygon (image pixel coordinates)
// goes into the read form's hidden "outline" input. Only when the page says
// so (data-ai-api, which the server sets only when the rules allow it) the
// AI second opinion fills #ai-panel and its contour and heat-map layers can
// be laid over the image; each layer is fetched anew every time it is
// switched on, because the server records every display.
//
// Geometry: an image pixel (x, y) (column, row; continuous, pixel (i, j)
// covers [i, i + 1) × [j, j + 1)) is drawn at canvas point
// (panX + x × zoom, panY + y × zoom), in CSS pixels of the canvas.
(() => {
  "use strict";

  const ZOOM_STEP = 1.25;
  const MAX_ZOOM = 32;
  const FRAME_CACHE_SIZE = 160;
  const MAX_OUTLINE_POINTS = 2000;
  const CLOSE_DISTANCE_PX = 8; // a click this close to the first vertex closes the outline
  const REPEAT_DISTANCE_PX = 4; // a click this close to the last vertex adds nothing (double clicks)
  const OUTLINE_COLOUR = "#00e5ff";
  const CALIPER_COLOUR = "#7cfc00";
  const FRAME_TEMPLATE = /\{frame\}|%7Bframe%7D/i;

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) {
        continue;
      }
      if (key === "className") {
        node.className = value;
      } else if (key === "text") {
        node.textContent = value;
      } else {
        node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(child);
      }
    }
    return node;
  }

  // A labelled control: <label for> + the control + an optional read-out of its value.
  function field(text, input, output) {
    return el("span", { className: "viewer-field" }, [
      el("label", { className: "viewer-label", for: input.id, text }),
      input,
      output || null,
    ]);
  }

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  function detailOf(body, fallback) {
    return body && typeof body.detail === "string" && body.detail ? body.detail : fallback;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  function formatNumber(value, digits) {
    return Number(value).toLocaleString("en", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function percent(probability) {
    return `${Math.round(Number(probability) * 100)} %`;
  }

  function isOutline(value) {
    return (
      value !== null &&
      typeof value === "object" &&
      Number.isInteger(value.image) &&
      Array.isArray(value.points) &&
      value.points.length >= 3 &&
      value.points.every((point) => Array.isArray(point) && point.length === 2 && point.every(Number.isFinite))
    );
  }

  class Viewer {
    constructor(root) {
      this.root = root;
      const form = document.getElementById("read-form");
      this.outlineInput = form ? form.querySelector('input[name="outline"]') : null;
      this.images = [];
      this.image = null;
      this.index = 0;
      this.frame = 0;
      this.entry = null; // the frame on screen: {canvas, raw, windowKey}
      this.frameCache = new Map(); // "image:frame" → Promise of an entry
      this.loadToken = 0;
      this.windows = new Map(); // image id → {width, centre}
      this.zoom = 1;
      this.panX = 0;
      this.panY = 0;
      this.fitted = true;
      this.cssWidth = 0;
      this.cssHeight = 0;
      this.tool = "pan";
      this.drag = null;
      this.hover = null; // image point under the pointer
      this.caliper = []; // up to two image points
      this.outline = null; // {image, frame, points} once closed
      this.draft = []; // vertices of an outline being drawn (current image and frame)
      this.ai = null;
    }

    // --- Start -------------------------------------------------------------------------

    async start() {
      this.message = el("p", { className: "viewer-message", role: "status", text: "Loading the case…" });
      this.root.append(this.message);
      let response;
      try {
        response = await fetch(this.root.dataset.taskApi, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
      } catch {
        this.fail("The case could not be loaded: the server did not answer. Reload the page to try again.");
        return;
      }
      const body = await readJson(response);
      if (!response.ok || !body) {
        this.fail(detailOf(body, `The case could not be loaded (error ${response.status}).`));
        return;
      }
      this.images = (Array.isArray(body.images) ? body.images : []).filter(
        (image) => image && image.rows > 0 && image.columns > 0 && typeof image.frame_url === "string",
      );
      if (!this.images.length) {
        this.fail("This case has no image to show.");
        return;
      }
      this.message.textContent = "";
      this.build();
      this.outline = this.initialOutline(body);
      this.selectImage(0);
      if (this.root.dataset.aiApi) {
        this.loadAi();
      }
    }

    fail(text) {
      this.message.className = "viewer-message alert alert-error";
      this.message.setAttribute("role", "alert");
      this.message.textContent = text;
    }

    say(text) {
      this.message.className = "viewer-message";
      this.message.setAttribute("role", "status");
      this.message.textContent = text;
    }

    initialOutline(body) {
      // The form's hidden input first (it holds what the page will submit,
      // e.g. after a rejected submission), else the open read's outline.
      const candidates = [];
      if (this.outlineInput && this.outlineInput.value.trim()) {
        try {
          candidates.push(JSON.parse(this.outlineInput.value));
        } catch {
          // not an outline; fall back to the saved one
        }
      }
      const reads = Array.isArray(body.reads) ? body.reads : [];
      const open = reads.filter((read) => read && read.current && (!body.phase || read.phase === body.phase));
      for (const read of open.reverse()) {
        candidates.push(read.outline);
      }
      for (const candidate of candidates) {
        if (isOutline(candidate) && this.images.some((image) => image.id === candidate.image)) {
          return {
            image: candidate.image,
            frame: Number.isInteger(candidate.frame) ? candidate.frame : 0,
            points: candidate.points.map((point) => [Number(point[0]), Number(point[1])]),
          };
        }
      }
      return null;
    }

    // --- Controls ----------------------------------------------------------------------

    // A button named by its text, or by `label` when the text is a symbol.
    button(text, label, handler, extra = {}) {
      const node = el("button", { type: "button", className: "btn viewer-btn", "aria-label": label, ...extra }, [
        text,
      ]);
      node.addEventListener("click", handler);
      return node;
    }

    build() {
      this.root.classList.add("viewer-ready");
      if (this.images.length > 1) {
        this.picker = el("div", { className: "viewer-images", role: "group", "aria-label": "Images of this case" });
        this.imageButtons = this.images.map((image, index) => {
          const label = `Image ${index + 1}`;
          const node = this.button(label, null, () => this.selectImage(index), {
            "aria-pressed": "false",
          });
          this.picker.append(node);
          return node;
        });
        this.root.append(this.picker);
      }

      const toolbar = el("div", { className: "viewer-toolbar" });
      const tools = el("div", { className: "viewer-group", role: "group", "aria-label": "Tool" });
      this.toolButtons = {};
      const toolList = [
        ["pan", "Pan", "Pan: drag the image to move it"],
        ["caliper", "Caliper", "Caliper: click two points to measure the distance between them"],
      ];
      if (this.outlineInput) {
        toolList.push([
          "outline",
          "Outline",
          "Lesion outline: click the vertices; double-click, click the first vertex or press Close outline to finish",
        ]);
      }
      for (const [tool, text, title] of toolList) {
        const node = this.button(text, null, () => this.setTool(tool), { "aria-pressed": "false", title });
        this.toolButtons[tool] = node;
        tools.append(node);
      }
      toolbar.append(tools);

      const zoom = el("div", { className: "viewer-group", role: "group", "aria-label": "Zoom" });
      zoom.append(
        this.button("−", "Zoom out", () => this.zoomBy(1 / ZOOM_STEP), { title: "Zoom out (−)" }),
        this.button("+", "Zoom in", () => this.zoomBy(ZOOM_STEP), { title: "Zoom in (+)" }),
        this.button("Reset view", null, () => this.resetView(true), {
          title: "Fit the image and undo the window/level changes (0)",
        }),
      );
      this.zoomOutput = el("output", { className: "viewer-value", "aria-live": "off", "aria-label": "Zoom level" });
      zoom.append(this.zoomOutput);
      toolbar.append(zoom);

      if (this.outlineInput) {
        const outline = el("div", { className: "viewer-group", role: "group", "aria-label": "Lesion outline" });
        this.closeButton = this.button("Close outline", null, () => this.closeOutline());
        this.clearButton = this.button("Clear outline", null, () => this.clearOutline());
        outline.append(this.closeButton, this.clearButton);
        toolbar.append(outline);
        this.outlineInput.addEventListener("outline:load", () => this.outlineReplaced());
      }

      // Per-image controls (window/level, frame slider) live in this slot.
      this.imageControls = el("div", { className: "viewer-image-controls" });
      toolbar.append(this.imageControls);
      this.root.append(toolbar);

      this.stage = el("div", { className: "viewer-stage" });
      const helpId = `${this.root.id || "viewer"}-keys`;
      this.canvas = el("canvas", {
        className: "viewer-canvas",
        tabindex: "0",
        role: "img",
        "aria-describedby": helpId,
      });
      this.context = this.canvas.getContext("2d");
      this.stage.append(this.canvas);
      this.root.append(this.stage);

      this.readout = el("p", { className: "viewer-readout", "aria-live": "polite" });
      this.root.append(this.readout);
      this.root.append(
        el("p", {
          className: "viewer-keys help",
          id: helpId,
          text:
            "Keys on the image: + and − zoom, 0 resets the view, the arrow keys change the frame of a cine loop, " +
            "Escape cancels a measurement or an outline being drawn. The mouse wheel zooms.",
        }),
      );
      this.root.append(this.message); // keep messages under the image

      this.canvas.addEventListener("pointerdown", (event) => this.pointerDown(event));
      this.canvas.addEventListener("pointermove", (event) => this.pointerMove(event));
      this.canvas.addEventListener("pointerup", (event) => this.pointerUp(event));
      this.canvas.addEventListener("pointercancel", (event) => this.pointerUp(event));
      this.canvas.addEventListener("pointerleave", () => {
        this.hover = null;
        this.draw();
      });
      this.canvas.addEventListener("click", (event) => this.click(event));
      this.canvas.addEventListener("dblclick", (event) => {
        if (this.tool === "outline") {
          event.preventDefault();
          this.closeOutline();
        }
      });
      this.canvas.addEventListener("wheel", (event) => this.wheel(event), { passive: false });
      this.root.addEventListener("keydown", (event) => this.key(event));
      window.addEventListener("resize", () => this.resize());
      this.setTool("pan");
    }

    setTool(tool) {
      this.tool = tool;
      for (const [name, node] of Object.entries(this.toolButtons)) {
        node.setAttribute("aria-pressed", String(name === tool));
        node.classList.toggle("viewer-btn-active", name === tool);
      }
      this.canvas.dataset.tool = tool;
      this.draft = tool === "outline" ? this.draft : [];
      this.updateOutlineButtons();
      this.updateReadout();
      this.draw();
    }

    selectImage(index) {
      this.index = index;
      this.image = this.images[index];
      this.caliper = [];
      this.draft = [];
      this.entry = null;
      (this.imageButtons || []).forEach((node, i) => {
        node.setAttribute("aria-pressed", String(i === index));
        node.classList.toggle("viewer-btn-active", i === index);
      });
      this.buildImageControls();
      this.resize(true);
      const frame = this.image.key_frame;
      this.showFrame(Number.isInteger(frame) ? frame : 0);
      if (this.ai) {
        this.renderAi();
      }
      this.updateOutlineButtons();
    }

    buildImageControls() {
      const image = this.image;
      this.imageControls.replaceChildren();
      this.widthInput = this.centreInput = this.frameInput = null;
      if (image.grey) {
        if (!this.windows.has(image.id)) {
          this.windows.set(image.id, { width: 256, centre: 128 });
        }
        const windowing = this.windows.get(image.id);
        const group = el("div", { className: "viewer-group viewer-window", role: "group", "aria-label": "Window/level" });
        this.widthInput = el("input", {
          type: "range",
          min: "1",
          max: "256",
          step: "1",
          value: windowing.width,
          className: "viewer-range",
          id: "viewer-window-width",
        });
        this.centreInput = el("input", {
          type: "range",
          min: "0",
          max: "255",
          step: "1",
          value: windowing.centre,
          className: "viewer-range",
          id: "viewer-window-centre",
        });
        this.widthOutput = el("output", { className: "viewer-value", for: "viewer-window-width" });
        this.centreOutput = el("output", { className: "viewer-value", for: "viewer-window-centre" });
        group.append(
          field("Window width", this.widthInput, this.widthOutput),
          field("Window centre", this.centreInput, this.centreOutput),
        );
        const onWindow = () => {
          windowing.width = Number(this.widthInput.value);
          windowing.centre = Number(this.centreInput.value);
          this.showWindow();
          this.applyWindow();
          this.draw();
        };
        this.widthInput.addEventListener("input", onWindow);
        this.centreInput.addEventListener("input", onWindow);
        this.imageControls.append(group);
        this.showWindow();
      }
      if (image.frames > 1) {
        const group = el("div", { className: "viewer-group viewer-frames", role: "group", "aria-label": "Frames" });
        this.frameInput = el("input", {
          type: "range",
          min: "0",
          max: String(image.frames - 1),
          step: "1",
          value: "0",
          className: "viewer-range viewer-frame-range",
          id: "viewer-frame",
        });
        this.frameOutput = el("output", { className: "viewer-value viewer-frame-number", for: "viewer-frame" });
        this.frameInput.addEventListener("input", () => this.showFrame(Number(this.frameInput.value)));
        group.append(
          this.button("◀", "Previous frame", () => this.showFrame(this.frame - 1), { title: "Previous frame (←)" }),
          field("Frame", this.frameInput),
          this.button("▶", "Next frame", () => this.showFrame(this.frame + 1), { title: "Next frame (→)" }),
          this.frameOutput,
        );
        this.imageControls.append(group);
      }
    }

    showWindow() {
      const windowing = this.windows.get(this.image.id);
      this.widthInput.value = String(windowing.width);
      this.centreInput.value = String(windowing.centre);
      this.widthOutput.textContent = String(windowing.width);
      this.centreOutput.textContent = String(windowing.centre);
      this.widthInput.setAttribute("aria-valuetext", `width ${windowing.width}`);
      this.centreInput.setAttribute("aria-valuetext", `centre ${windowing.centre}`);
    }

    // --- Geometry ----------------------------------------------------------------------

    resize(refit = false) {
      const width = Math.max(200, Math.floor(this.stage.clientWidth || this.root.clientWidth || 640));
      const image = this.image;
      const wanted = (width * image.rows) / image.columns;
      const tallest = Math.max(320, Math.floor(window.innerHeight * 0.72));
      const height = Math.round(clamp(wanted, 240, tallest));
      const ratio = window.devicePixelRatio || 1;
      if (width !== this.cssWidth || height !== this.cssHeight || refit) {
        // The style sheet draws the canvas at the stage's width and the
        // height its backing store's proportions give: no style attribute.
        this.canvas.width = Math.round(width * ratio);
        this.canvas.height = Math.round(height * ratio);
        this.cssWidth = width;
        this.cssHeight = height;
        if (refit || this.fitted) {
          this.fit();
        }
      }
      this.draw();
    }

    fitZoom() {
      return Math.min(this.cssWidth / this.image.columns, this.cssHeight / this.image.rows);
    }

    fit() {
      this.zoom = this.fitZoom();
      this.panX = (this.cssWidth - this.image.columns * this.zoom) / 2;
      this.panY = (this.cssHeight - this.image.rows * this.zoom) / 2;
      this.fitted = true;
      this.showZoom();
    }

    resetView(resetWindow) {
      this.fit();
      if (resetWindow && this.image.grey) {
        this.windows.set(this.image.id, { width: 256, centre: 128 });
        this.buildImageControls();
        if (this.frameInput) {
          this.frameInput.value = String(this.frame);
          this.showFrameNumber();
        }
        this.applyWindow();
      }
      this.draw();
    }

    zoomBy(factor, atX = this.cssWidth / 2, atY = this.cssHeight / 2) {
      const low = Math.min(1, this.fitZoom()) / 4;
      const zoom = clamp(this.zoom * factor, low, MAX_ZOOM);
      const x = (atX - this.panX) / this.zoom;
      const y = (atY - this.panY) / this.zoom;
      this.zoom = zoom;
      this.panX = atX - x * zoom;
      this.panY = atY - y * zoom;
      this.fitted = false;
      this.showZoom();
      this.draw();
    }

    showZoom() {
      this.zoomOutput.textContent = `${Math.round(this.zoom * 100)} %`;
      this.canvas.dataset.zoom = this.zoom.toFixed(4);
    }

    toCanvas(point) {
      return [this.panX + point[0] * this.zoom, this.panY + point[1] * this.zoom];
    }

    toImage(canvasX, canvasY) {
      return [(canvasX - this.panX) / this.zoom, (canvasY - this.panY) / this.zoom];
    }

    eventPoint(event) {
      const box = this.canvas.getBoundingClientRect();
      const scaleX = box.width ? this.cssWidth / box.width : 1;
      const scaleY = box.height ? this.cssHeight / box.height : 1;
      return [(event.clientX - box.left) * scaleX, (event.clientY - box.top) * scaleY];
    }

    // The image point of a click, pulled onto the image when it fell just
    // outside its edge; null when it fell clearly outside.
    imagePoint(event) {
      const [cx, cy] = this.eventPoint(event);
      const [x, y] = this.toImage(cx, cy);
      const slack = 10 / this.zoom;
      const { columns, rows } = this.image;
      if (x < -slack || y < -slack || x > columns + slack || y > rows + slack) {
        return null;
      }
      return [clamp(x, 0, columns), clamp(y, 0, rows)];
    }

    distanceOnCanvas(a, b) {
      return Math.hypot(a[0] - b[0], a[1] - b[1]) * this.zoom;
    }

    // --- Frames and window/level ---------------------------------------------------------

    frameUrl(image, frame) {
      return image.frame_url.replace(FRAME_TEMPLATE, String(frame));
    }

    loadFrame(image, frame) {
      const key = `${image.id}:${frame}`;
      let promise = this.frameCache.get(key);
      if (promise) {
        this.frameCache.delete(key); // most recently used last
        this.frameCache.set(key, promise);
        return promise;
      }
      promise = (async () => {
        const response = await fetch(this.frameUrl(image, frame), { credentials: "same-origin" });
        if (!response.ok) {
          const body = await readJson(response);
          throw new Error(detailOf(body, `Frame ${frame + 1} could not be loaded (error ${response.status}).`));
        }
        const bitmap = await createImageBitmap(await response.blob(), {
          colorSpaceConversion: "none",
          premultiplyAlpha: "none",
        });
        const canvas = document.createElement("canvas");
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
        const context = canvas.getContext("2d", { willReadFrequently: Boolean(image.grey) });
        context.drawImage(bitmap, 0, 0);
        bitmap.close();
        const raw = image.grey ? context.getImageData(0, 0, canvas.width, canvas.height) : null;
        return { canvas, context, raw, windowKey: "" };
      })();
      promise.catch(() => this.frameCache.delete(key));
      this.frameCache.set(key, promise);
      while (this.frameCache.size > FRAME_CACHE_SIZE) {
        this.frameCache.delete(this.frameCache.keys().next().value);
      }
      return promise;
    }

    async showFrame(frame) {
      const image = this.image;
      const last = Math.max(0, (image.frames || 1) - 1);
      frame = clamp(Math.round(Number(frame) || 0), 0, last);
      if (frame !== this.frame && this.tool === "outline" && this.draft.length) {
        this.draft = []; // an outline belongs to one frame
      }
      this.frame = frame;
      if (this.frameInput) {
        this.frameInput.value = String(frame);
        this.showFrameNumber();
      }
      const token = ++this.loadToken;
      let entry;
      try {
        entry = await this.loadFrame(image, frame);
      } catch (error) {
        if (token === this.loadToken) {
          this.fail(error instanceof Error ? error.message : String(error));
        }
        return;
      }
      if (token !== this.loadToken) {
        return;
      }
      if (this.message.classList.contains("alert-error")) {
        this.say("");
      }
      this.entry = entry;
      this.applyWindow();
      this.canvas.dataset.image = String(image.id);
      this.canvas.dataset.frame = String(frame);
      this.canvas.setAttribute(
        "aria-label",
        `Image ${this.index + 1} of ${this.images.length}` +
          (image.frames > 1 ? `, frame ${frame + 1} of ${image.frames}` : "") +
          ` (${image.columns} × ${image.rows} pixels)`,
      );
      this.root.dataset.state = "ready";
      this.updateAiNote();
      this.updateReadout();
      this.draw();
    }

    showFrameNumber() {
      const text = `Frame ${this.frame + 1} of ${this.image.frames}`;
      this.frameOutput.textContent = text;
      this.frameInput.setAttribute("aria-valuetext", text);
    }

    // Grey pixels through the window: values at or below the window's
    // bottom are black, at or above its top white, linear between (the
    // DICOM linear VOI function).
    applyWindow() {
      const entry = this.entry;
      if (!entry || !entry.raw || !this.image.grey) {
        return;
      }
      const { width, centre } = this.windows.get(this.image.id);
      const key = `${width}:${centre}`;
      if (entry.windowKey === key) {
        return;
      }
      const lut = new Uint8ClampedArray(256);
      const bottom = centre - 0.5 - (width - 1) / 2;
      const top = centre - 0.5 + (width - 1) / 2;
      for (let value = 0; value < 256; value += 1) {
        if (value <= bottom) {
          lut[value] = 0;
        } else if (value > top) {
          lut[value] = 255;
        } else {
          lut[value] = Math.round(((value - (centre - 0.5)) / Math.max(1, width - 1) + 0.5) * 255);
        }
      }
      const source = entry.raw.data;
      const out = entry.context.createImageData(entry.raw.width, entry.raw.height);
      const data = out.data;
      for (let i = 0; i < source.length; i += 4) {
        const level = lut[source[i]];
        data[i] = level;
        data[i + 1] = level;
        data[i + 2] = level;
        data[i + 3] = 255;
      }
      entry.context.putImageData(out, 0, 0);
      entry.windowKey = key;
    }

    // --- Pointer and keys ----------------------------------------------------------------

    pointerDown(event) {
      const panning = (this.tool === "pan" && event.button === 0) || event.button === 1;
      if (!panning) {
        return;
      }
      event.preventDefault();
      this.canvas.focus({ preventScroll: true });
      const [x, y] = this.eventPoint(event);
      this.drag = { id: event.pointerId, x, y, panX: this.panX, panY: this.panY };
      this.canvas.setPointerCapture(event.pointerId);
      this.canvas.classList.add("viewer-dragging");
    }

    pointerMove(event) {
      const [x, y] = this.eventPoint(event);
      if (this.drag && this.drag.id === event.pointerId) {
        this.panX = this.drag.panX + (x - this.drag.x);
        this.panY = this.drag.panY + (y - this.drag.y);
        this.fitted = false;
        this.draw();
        return;
      }
      if ((this.tool === "caliper" && this.caliper.length === 1) || (this.tool === "outline" && this.draft.length)) {
        this.hover = this.toImage(x, y);
        this.draw();
      }
    }

    pointerUp(event) {
      if (this.drag && this.drag.id === event.pointerId) {
        this.drag = null;
        this.canvas.classList.remove("viewer-dragging");
        if (this.canvas.hasPointerCapture(event.pointerId)) {
          this.canvas.releasePointerCapture(event.pointerId);
        }
      }
    }

    click(event) {
      if (event.button !== 0 || !this.entry) {
        return;
      }
      if (this.tool === "caliper") {
        const point = this.imagePoint(event);
        if (!point) {
          return;
        }
        this.caliper = this.caliper.length === 1 ? [this.caliper[0], point] : [point];
        this.updateReadout();
        this.draw();
      } else if (this.tool === "outline") {
        this.addVertex(event);
      }
    }

    wheel(event) {
      event.preventDefault();
      const [x, y] = this.eventPoint(event);
      const steps = clamp(-event.deltaY / (event.deltaMode === 0 ? 100 : 3), -4, 4);
      if (steps) {
        this.zoomBy(ZOOM_STEP ** steps, x, y);
      }
    }

    key(event) {
      const target = event.target;
      if (
        event.ctrlKey ||
        event.metaKey ||
        event.altKey ||
        (target instanceof Element && target.closest("input, select, textarea, [contenteditable]"))
      ) {
        return;
      }
      const frames = this.image ? this.image.frames || 1 : 1;
      let handled = true;
      switch (event.key) {
        case "+":
        case "=":
          this.zoomBy(ZOOM_STEP);
          break;
        case "-":
        case "_":
        case "−":
          this.zoomBy(1 / ZOOM_STEP);
          break;
        case "0":
          this.resetView(false);
          break;
        case "ArrowRight":
        case "ArrowUp":
          handled = frames > 1;
          if (handled) {
            this.showFrame(this.frame + 1);
          }
          break;
        case "ArrowLeft":
        case "ArrowDown":
          handled = frames > 1;
          if (handled) {
            this.showFrame(this.frame - 1);
          }
          break;
        case "Escape":
          handled = this.caliper.length > 0 || this.draft.length > 0;
          this.caliper = [];
          this.draft = [];
          this.updateOutlineButtons();
          this.updateReadout();
          this.draw();
          break;
        default:
          handled = false;
      }
      if (handled) {
        event.preventDefault();
      }
    }

    // --- Caliper -------------------------------------------------------------------------

    measure(a, b) {
      const dx = b[0] - a[0];
      const dy = b[1] - a[1];
      const spacing = this.image.pixel_spacing_mm;
      if (Array.isArray(spacing) && spacing.length === 2 && spacing[0] > 0 && spacing[1] > 0) {
        // [row spacing, column spacing]: rows are stacked vertically (y), columns horizontally (x)
        const mm = Math.hypot(dx * spacing[1], dy * spacing[0]);
        return { text: `${formatNumber(mm, mm < 10 ? 2 : 1)} mm`, note: "" };
      }
      const px = Math.hypot(dx, dy);
      return { text: `${formatNumber(px, 1)} px`, note: "no pixel spacing" };
    }

    // --- Outline -------------------------------------------------------------------------

    addVertex(event) {
      if (this.outline) {
        this.say("Clear the outline first to draw a new one.");
        return;
      }
      const point = this.imagePoint(event);
      if (!point) {
        return;
      }
      const draft = this.draft;
      if (draft.length && this.distanceOnCanvas(point, draft[draft.length - 1]) < REPEAT_DISTANCE_PX) {
        return; // the second click of a double click, or a shaky hand
      }
      if (draft.length >= 3 && this.distanceOnCanvas(point, draft[0]) < CLOSE_DISTANCE_PX) {
        this.closeOutline();
        return;
      }
      if (draft.length >= MAX_OUTLINE_POINTS) {
        this.say(`An outline has at most ${MAX_OUTLINE_POINTS} points; close it now.`);
        return;
      }
      draft.push(point);
      this.updateOutlineButtons();
      this.updateReadout();
      this.draw();
    }

    closeOutline() {
      if (this.outline || this.draft.length < 3) {
        if (!this.outline) {
          this.say("An outline needs at least three points.");
        }
        return;
      }
      this.outline = {
        image: this.image.id,
        frame: this.frame,
        points: this.draft.map(([x, y]) => [
          Math.round(clamp(x, 0, this.image.columns) * 100) / 100,
          Math.round(clamp(y, 0, this.image.rows) * 100) / 100,
        ]),
      };
      this.draft = [];
      this.writeOutline();
      this.say("The outline is closed; it is saved with the draft.");
      this.updateOutlineButtons();
      this.updateReadout();
      this.draw();
    }

    clearOutline() {
      const had = Boolean(this.outline);
      this.outline = null;
      this.draft = [];
      if (had) {
        this.writeOutline();
        this.say("The outline was cleared.");
      }
      this.updateOutlineButtons();
      this.updateReadout();
      this.draw();
    }

    // The hidden input holds the outline as JSON ("{}" once cleared, which
    // tells the server to drop the saved one); the change event makes the
    // read form save the draft.
    writeOutline() {
      if (!this.outlineInput) {
        return;
      }
      this.outlineInput.value = this.outline ? JSON.stringify(this.outline) : "{}";
      this.outlineInput.dispatchEvent(new Event("change", { bubbles: true }));
    }

    // The read form loaded the server's version into the hidden input.
    outlineReplaced() {
      let value = null;
      try {
        value = this.outlineInput.value.trim() ? JSON.parse(this.outlineInput.value) : null;
      } catch {
        value = null;
      }
      this.outline =
        isOutline(value) && this.images.some((image) => image.id === value.image)
          ? { image: value.image, frame: Number.isInteger(value.frame) ? value.frame : 0, points: value.points }
          : null;
      this.draft = [];
      this.updateOutlineButtons();
      this.updateReadout();
      this.draw();
    }

    updateOutlineButtons() {
      if (!this.closeButton) {
        return;
      }
      this.closeButton.disabled = Boolean(this.outline) || this.draft.length < 3;
      this.clearButton.disabled = !this.outline && this.draft.length === 0;
    }

    updateReadout() {
      if (!this.readout || !this.image) {
        return;
      }
      const parts = [];
      if (this.caliper.length === 2) {
        const { text, note } = this.measure(this.caliper[0], this.caliper[1]);
        parts.push(`Caliper: ${text}${note ? ` (${note})` : ""}`);
      } else if (this.tool === "caliper") {
        parts.push(this.caliper.length ? "Caliper: click the second point." : "Caliper: click the first point.");
      }
      if (this.outline) {
        const where =
          this.outline.image !== this.image.id
            ? ` on image ${this.images.findIndex((image) => image.id === this.outline.image) + 1}`
            : "";
        const frame =
          (this.imageOf(this.outline.image).frames || 1) > 1 ? `, frame ${this.outline.frame + 1}` : "";
        parts.push(`Outline: ${this.outline.points.length} points${where}${frame}.`);
      } else if (this.tool === "outline") {
        parts.push(
          this.draft.length
            ? `Outline: ${this.draft.length} point${this.draft.length === 1 ? "" : "s"}; double-click or press Close outline to finish.`
            : "Outline: click around the lesion.",
        );
      }
      this.readout.textContent = parts.join(" · ");
    }

    imageOf(id) {
      return this.images.find((image) => image.id === id) || this.image;
    }

    // --- Drawing -------------------------------------------------------------------------

    draw() {
      if (!this.context || !this.image) {
        return;
      }
      const ctx = this.context;
      const ratio = this.canvas.width / Math.max(1, this.cssWidth);
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, this.cssWidth, this.cssHeight);
      const width = this.image.columns * this.zoom;
      const height = this.image.rows * this.zoom;
      // Magnified pixels stay square and sharp; a reduced image is smoothed.
      ctx.imageSmoothingEnabled = this.zoom <= 1;
      ctx.imageSmoothingQuality = "high";
      if (this.entry) {
        ctx.drawImage(this.entry.canvas, this.panX, this.panY, width, height);
      }
      this.drawAi(ctx, width, height);
      this.drawOutline(ctx);
      this.drawCaliper(ctx);
    }

    path(ctx, points, close) {
      ctx.beginPath();
      points.forEach((point, i) => {
        const [x, y] = this.toCanvas(point);
        if (i === 0) {
          ctx.moveTo(x, y);
        } else {
          ctx.lineTo(x, y);
        }
      });
      if (close) {
        ctx.closePath();
      }
    }

    drawOutline(ctx) {
      ctx.save();
      ctx.lineWidth = 2;
      ctx.strokeStyle = OUTLINE_COLOUR;
      if (this.outline && this.outline.image === this.image.id) {
        const elsewhere = this.outline.frame !== this.frame;
        this.path(ctx, this.outline.points, true);
        if (elsewhere) {
          ctx.setLineDash([6, 4]);
          ctx.globalAlpha = 0.6;
        } else {
          ctx.fillStyle = "rgba(0, 229, 255, 0.15)";
          ctx.fill();
        }
        ctx.stroke();
        if (elsewhere) {
          const [x, y] = this.toCanvas(this.outline.points[0]);
          this.label(ctx, `outline drawn on frame ${this.outline.frame + 1}`, x, y - 10, OUTLINE_COLOUR);
        }
      }
      ctx.restore();
      if (this.draft.length) {
        ctx.save();
        ctx.lineWidth = 2;
        ctx.strokeStyle = OUTLINE_COLOUR;
        ctx.setLineDash([5, 3]);
        const points = this.hover ? [...this.draft, this.hover] : this.draft;
        this.path(ctx, points, false);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = OUTLINE_COLOUR;
        for (const point of this.draft) {
          const [x, y] = this.toCanvas(point);
          ctx.fillRect(x - 2.5, y - 2.5, 5, 5);
        }
        ctx.restore();
      }
    }

    drawCaliper(ctx) {
      if (!this.caliper.length) {
        return;
      }
      const end = this.caliper[1] || this.hover;
      ctx.save();
      ctx.strokeStyle = CALIPER_COLOUR;
      ctx.fillStyle = CALIPER_COLOUR;
      ctx.lineWidth = 1.5;
      const [ax, ay] = this.toCanvas(this.caliper[0]);
      const tick = (x, y, angle) => {
        ctx.beginPath();
        ctx.moveTo(x + Math.cos(angle + Math.PI / 2) * 6, y + Math.sin(angle + Math.PI / 2) * 6);
        ctx.lineTo(x - Math.cos(angle + Math.PI / 2) * 6, y - Math.sin(angle + Math.PI / 2) * 6);
        ctx.stroke();
      };
      if (end) {
        const [bx, by] = this.toCanvas(end);
        const angle = Math.atan2(by - ay, bx - ax);
        if (!this.caliper[1]) {
          ctx.setLineDash([4, 3]);
        }
        ctx.beginPath();
        ctx.moveTo(ax, ay);
        ctx.lineTo(bx, by);
        ctx.stroke();
        ctx.setLineDash([]);
        tick(ax, ay, angle);
        tick(bx, by, angle);
        const { text, note } = this.measure(this.caliper[0], end);
        this.label(ctx, note ? `${text} (${note})` : text, (ax + bx) / 2 + 8, (ay + by) / 2 - 8, CALIPER_COLOUR);
      } else {
        tick(ax, ay, 0);
        tick(ax, ay, Math.PI / 2);
      }
      ctx.restore();
    }

    label(ctx, text, x, y, colour) {
      ctx.save();
      ctx.setLineDash([]);
      ctx.globalAlpha = 1;
      ctx.font = "12px system-ui, sans-serif";
      const width = ctx.measureText(text).width + 8;
      const left = clamp(x, 2, Math.max(2, this.cssWidth - width - 2));
      const top = clamp(y - 14, 2, Math.max(2, this.cssHeight - 20));
      ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
      ctx.fillRect(left, top, width, 18);
      ctx.fillStyle = colour;
      ctx.textBaseline = "middle";
      ctx.fillText(text, left + 4, top + 9);
      ctx.restore();
    }

    // --- AI second opinion -------------------------------------------------------------

    aiPanel() {
      let panel = document.getElementById("ai-panel");
      if (!panel) {
        panel = el("section", { id: "ai-panel", className: "card ai-panel", "aria-label": "AI second opinion" });
        this.root.after(panel);
      }
      let body = panel.querySelector(".ai-body");
      if (!body) {
        body = el("div", { className: "ai-body", "aria-live": "polite" });
        panel.append(body);
      }
      return body;
    }

    async loadAi() {
      const body = this.aiPanel();
      // Empty and busy until the answer is in: the panel's text is the opinion or why there is none.
      body.replaceChildren();
      body.setAttribute("aria-busy", "true");
      const response = await this.fetchAi();
      body.removeAttribute("aria-busy");
      if (response === null) {
        body.replaceChildren(
          el("p", { className: "alert alert-error", role: "alert", text: "The AI second opinion could not be loaded." }),
        );
        return;
      }
      const data = await readJson(response);
      if (!response.ok || !data) {
        const fallback =
          response.status === 403
            ? "The AI second opinion is shown once your unaided read is signed."
            : `The AI second opinion could not be loaded (error ${response.status}).`;
        body.replaceChildren(
          el("p", {
            className: response.status === 403 ? "alert alert-info" : "alert alert-error",
            role: "alert",
            text: detailOf(data, fallback),
          }),
        );
        return;
      }
      this.ai = {
        results: Array.isArray(data.results) ? data.results : [],
        opacity: 0.6,
        layers: { contour: this.emptyLayer(), heatmap: this.emptyLayer() },
      };
      this.renderAi();
    }

    async fetchAi() {
      try {
        return await fetch(this.root.dataset.aiApi, {
          credentials: "same-origin",
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
      } catch {
        return null;
      }
    }

    emptyLayer() {
      return { on: false, bitmap: null, token: 0, result: null };
    }

    aiResult() {
      return this.ai ? this.ai.results.find((result) => result.image === this.image.id) || null : null;
    }

    aiFrame(result) {
      return Number.isInteger(result.frame) ? result.frame : 0;
    }

    renderAi() {
      const body = this.aiPanel();
      for (const kind of ["contour", "heatmap"]) {
        this.dropLayer(kind); // a layer belongs to one image's result; showing it again fetches it again
      }
      const result = this.aiResult();
      if (!result) {
        body.replaceChildren(
          el("p", {
            className: "muted",
            text: this.ai.results.length
              ? "The AI gave no opinion on this image."
              : "The AI gave no opinion on the images of this case.",
          }),
        );
        this.draw();
        return;
      }
      const facts = el("dl", { className: "details ai-facts" });
      const fact = (term, ...value) => facts.append(el("dt", { text: term }), el("dd", {}, value));
      const children = [];
      if (result.status === "abstained") {
        children.push(
          el("p", {
            className: "alert alert-warning ai-abstained",
            text: `The AI abstained on this image${result.reason ? `: ${result.reason}` : "."}`,
          }),
        );
      } else if (result.category) {
        const probability = Number.isFinite(result.category_probability)
          ? ` · probability ${percent(result.category_probability)}`
          : "";
        children.push(
          el("p", { className: "ai-category" }, [
            "Suggested category: ",
            el("strong", { text: String(result.category) }),
            probability,
          ]),
        );
      }
      const m = result.measurements && typeof result.measurements === "object" ? result.measurements : {};
      if (Number.isInteger(m.lesion_count)) {
        fact("Lesions found", String(m.lesion_count));
      }
      if (Number.isFinite(m.total_area_mm2)) {
        fact("Lesion area", `${formatNumber(m.total_area_mm2, 1)} mm²`);
      } else if (Number.isFinite(m.total_area_px)) {
        fact("Lesion area", `${formatNumber(m.total_area_px, 0)} px (no pixel spacing)`);
      }
      const lesions = Array.isArray(m.lesions) ? m.lesions : [];
      const diameters = lesions.map((lesion) => lesion.largest_diameter_mm).filter(Number.isFinite);
      const diametersPx = lesions.map((lesion) => lesion.largest_diameter_px).filter(Number.isFinite);
      if (diameters.length) {
        fact("Largest diameter", `${formatNumber(Math.max(...diameters), 1)} mm`);
      } else if (diametersPx.length) {
        fact("Largest diameter", `${formatNumber(Math.max(...diametersPx), 1)} px (no pixel spacing)`);
      }
      if ((this.image.frames || 1) > 1) {
        fact("Frame", `AI judged frame ${this.aiFrame(result) + 1}`);
      }
      const quality = result.quality && typeof result.quality === "object" ? result.quality : null;
      if (quality) {
        fact("Image quality", quality.ok ? "passed the quality check" : quality.reason || "did not pass the check");
      }
      const model = result.model || {};
      const hash = typeof model.sha256 === "string" ? model.sha256.slice(0, 12) : "";
      fact(
        "Model",
        `${model.name || "unnamed"} ${model.version || ""}`.trim(),
        hash ? " · " : "",
        hash ? el("code", { className: "hash", title: "First 12 characters of the model file's SHA-256", text: hash }) : "",
      );
      children.push(facts);

      const layers = el("div", { className: "ai-layers", role: "group", "aria-label": "AI overlay on the image" });
      const toggle = (kind, text, url) => {
        const box = el("input", { type: "checkbox", className: `ai-toggle ai-toggle-${kind}` });
        box.disabled = !url;
        box.addEventListener("change", () => (box.checked ? this.showLayer(kind, result, box) : this.hideLayer(kind)));
        const label = el("label", { className: "check ai-toggle-label", title: url ? "" : "Not available for this image" }, [
          box,
          text,
        ]);
        layers.append(label);
        return box;
      };
      this.contourBox = toggle("contour", "Contour", result.contour_url);
      this.heatmapBox = toggle("heatmap", "Heat map", result.heatmap_url);
      const opacity = el("input", {
        type: "range",
        min: "0",
        max: "100",
        step: "5",
        value: String(Math.round(this.ai.opacity * 100)),
        className: "viewer-range ai-opacity",
        id: "ai-opacity",
      });
      const opacityValue = el("output", { className: "viewer-value", text: percent(this.ai.opacity) });
      opacity.addEventListener("input", () => {
        this.ai.opacity = Number(opacity.value) / 100;
        opacityValue.textContent = percent(this.ai.opacity);
        this.draw();
      });
      layers.append(field("Overlay opacity", opacity, opacityValue));
      children.push(layers);
      this.aiNote = el("p", { className: "ai-frame-note", hidden: true });
      children.push(this.aiNote);
      this.aiLayerStatus = el("p", { className: "ai-layer-status small", role: "status" });
      children.push(this.aiLayerStatus);
      body.replaceChildren(...children);
      this.updateAiNote();
      this.draw();
    }

    async showLayer(kind, result, box) {
      const layer = this.ai.layers[kind];
      const token = ++layer.token;
      layer.on = true;
      layer.result = result;
      if (layer.bitmap) {
        layer.bitmap.close();
      }
      layer.bitmap = null;
      const url = kind === "contour" ? result.contour_url : result.heatmap_url;
      const name = kind === "contour" ? "contour" : "heat map";
      this.aiLayerStatus.textContent = `Loading the ${name}…`;
      try {
        // Every display is recorded by the server: never from a cache.
        const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (!response.ok) {
          const body = await readJson(response);
          throw new Error(detailOf(body, `The ${name} could not be loaded (error ${response.status}).`));
        }
        const bitmap = await createImageBitmap(await response.blob(), { premultiplyAlpha: "default" });
        if (token !== layer.token || !layer.on) {
          bitmap.close();
          return;
        }
        layer.bitmap = bitmap;
        this.aiLayerStatus.textContent = "";
      } catch (error) {
        if (token === layer.token) {
          layer.on = false;
          box.checked = false;
          this.aiLayerStatus.textContent = error instanceof Error ? error.message : String(error);
        }
        return;
      }
      this.updateAiNote();
      this.draw();
    }

    hideLayer(kind) {
      this.dropLayer(kind);
      this.updateAiNote();
      this.draw();
    }

    dropLayer(kind) {
      const layer = this.ai.layers[kind];
      layer.token += 1;
      layer.on = false;
      layer.result = null;
      if (layer.bitmap) {
        layer.bitmap.close();
      }
      layer.bitmap = null;
    }

    updateAiNote() {
      if (!this.ai || !this.aiNote || !this.aiNote.isConnected) {
        return;
      }
      const result = this.aiResult();
      const on = Object.values(this.ai.layers).some((layer) => layer.on);
      if (!result || !on || this.aiFrame(result) === this.frame) {
        this.aiNote.hidden = true;
        this.aiNote.replaceChildren();
        return;
      }
      const frame = this.aiFrame(result);
      this.aiNote.hidden = false;
      this.aiNote.replaceChildren(
        `AI judged frame ${frame + 1}; the overlay is shown on that frame only. `,
        this.button(`Go to frame ${frame + 1}`, null, () => this.showFrame(frame)),
      );
    }

    drawAi(ctx, width, height) {
      if (!this.ai) {
        return;
      }
      ctx.save();
      ctx.globalAlpha = this.ai.opacity;
      for (const kind of ["heatmap", "contour"]) {
        const layer = this.ai.layers[kind];
        if (
          layer.on &&
          layer.bitmap &&
          layer.result &&
          layer.result.image === this.image.id &&
          this.aiFrame(layer.result) === this.frame
        ) {
          ctx.drawImage(layer.bitmap, this.panX, this.panY, width, height);
        }
      }
      ctx.restore();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("viewer");
    if (!root || !root.dataset.taskApi) {
      return;
    }
    const viewer = new Viewer(root);
    viewer.start();
  });
})();
