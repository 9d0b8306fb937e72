/*
 * A tlwidgets web app: classifies an uploaded picture or the webcam in the browser with
 * ONNX Runtime Web, and shows the top classes as bars.
 *
 * Everything the export wrote about the model is read from classifier.json (class names,
 * preprocessing, the model file, where ONNX Runtime Web comes from). Class names and file
 * names are only ever shown as text (textContent), never parsed as HTML. Every URL is
 * relative to this page, so the folder works from any static host and sub-path.
 */
(function () {
  "use strict";

  const CONFIG_URL = "classifier.json";
  const CAMERA_INTERVAL_MS = 150; // pause between two webcam predictions

  const $ = (id) => document.getElementById(id);
  const ui = {
    title: $("title"),
    about: $("about"),
    status: $("status"),
    file: $("file"),
    fileLabel: $("file-label"),
    start: $("camera-start"),
    stop: $("camera-stop"),
    picture: $("picture"),
    video: $("video"),
    predictions: $("predictions"),
  };
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });

  let config = null;
  let session = null;
  let queue = Promise.resolve(); // one model run at a time
  let stream = null;
  let pictureUrl = null;

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.status.dataset.kind = kind || "info";
  }

  function setState(state) {
    document.body.dataset.state = state;
  }

  function describeError(err) {
    return err && err.message ? err.message : String(err);
  }

  // ------------------------------------------------------------------ loading
  function checkConfig(c) {
    const fail = (what) => {
      throw new Error(CONFIG_URL + " is not a tlwidgets web app description (" + what + ").");
    };
    if (!c || c.format !== "tlwidgets-webapp") fail("format");
    if (!Array.isArray(c.classes) || c.classes.length < 1 || !c.classes.every((n) => typeof n === "string")) {
      fail("classes");
    }
    const p = c.preprocessing || {};
    const whole = (v) => Number.isInteger(v) && v > 0;
    if (!whole(p.input_size) || !whole(p.resize_size) || !["bilinear", "bicubic", "nearest"].includes(p.interpolation)) {
      fail("preprocessing");
    }
    const three = (v) => Array.isArray(v) && v.length === 3 && v.every((x) => Number.isFinite(x));
    if (!three(p.mean) || !three(p.std) || p.std.some((x) => x === 0)) fail("mean and std");
    if (!c.model || typeof c.model.file !== "string" || !c.runtime || typeof c.runtime.script !== "string") {
      fail("model or runtime");
    }
    return c;
  }

  async function loadConfig() {
    let response;
    try {
      response = await fetch(CONFIG_URL, { cache: "no-cache" });
    } catch (err) {
      if (location.protocol === "file:") {
        throw new Error(
          "Open this page through a web server, not as a file: for example run " +
            "'python -m http.server' in its folder and open http://localhost:8000."
        );
      }
      throw err;
    }
    if (!response.ok) throw new Error(CONFIG_URL + " could not be loaded (HTTP " + response.status + ").");
    return checkConfig(await response.json());
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve();
      script.onerror = () =>
        reject(
          new Error(
            "ONNX Runtime Web could not be loaded from " + src + ". Without internet access, export the " +
              "page with runtime=<a local onnxruntime-web folder> to copy it next to the page."
          )
        );
      document.head.appendChild(script);
    });
  }

  async function init() {
    try {
      config = await loadConfig();
      document.title = config.title;
      ui.title.textContent = config.title;
      const size = config.preprocessing.input_size;
      ui.about.textContent =
        config.model.name + ", " + config.classes.length + " classes, " + size + "\u00d7" + size +
        " pixels; ONNX Runtime Web " + (config.runtime.version || "");
      setStatus("Loading ONNX Runtime Web\u2026");
      if (typeof self.ort === "undefined") await loadScript(config.runtime.script);
      const ort = self.ort;
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      setStatus("Loading the model\u2026");
      session = await ort.InferenceSession.create(config.model.file, {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      });
      ui.file.disabled = false;
      ui.fileLabel.removeAttribute("aria-disabled");
      ui.start.disabled = false;
      setStatus("Ready: choose a picture or start the camera.", "ready");
      setState("ready");
    } catch (err) {
      setStatus(describeError(err), "error");
      setState("error");
    }
  }

  // ------------------------------------------------------------------ predicting
  function pixels(source, width, height) {
    const limit = config.preprocessing.max_pixels;
    if (limit && width * height > limit) {
      throw new Error(width + "\u00d7" + height + " pixels is more than this page reads (" + limit + ").");
    }
    canvas.width = width;
    canvas.height = height;
    context.fillStyle = "#fff"; // transparency on white, as in Python
    context.fillRect(0, 0, width, height);
    context.drawImage(source, 0, 0, width, height);
    return context.getImageData(0, 0, width, height);
  }

  function softmax(logits) {
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v);
    const exps = Array.from(logits, (v) => Math.exp(v - max));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / total);
  }

  async function runModel(image) {
    const ort = self.ort;
    const prep = config.preprocessing;
    const size = prep.input_size;
    const data = self.TLWPreprocess.preprocess(image.data, image.width, image.height, prep);
    const input = new ort.Tensor("float32", data, [1, 3, size, size]);
    const started = performance.now();
    const outputs = await session.run({ [session.inputNames[0]]: input });
    const ms = performance.now() - started;
    const logits = outputs[session.outputNames[0]].data;
    if (logits.length !== config.classes.length) {
      throw new Error(
        "The model gives " + logits.length + " scores, but " + CONFIG_URL + " lists " +
          config.classes.length + " classes."
      );
    }
    const probs = softmax(logits);
    const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
    const k = Math.min(config.top_k || 3, order.length);
    return { top: order.slice(0, k).map((i) => ({ index: i, probability: probs[i] })), ms };
  }

  function classify(image) {
    const result = queue.then(() => runModel(image));
    queue = result.catch(() => undefined);
    return result;
  }

  function render(top, note, source) {
    const rows = top.map(({ index, probability }, rank) => {
      const name = config.classes[index];
      const pct = Math.max(0, Math.min(100, 100 * probability));
      const row = document.createElement("div");
      row.className = rank === 0 ? "row first" : "row";
      row.dataset.rank = String(rank + 1);
      row.dataset.classIndex = String(index);
      row.dataset.probability = String(probability);
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      label.title = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = pct.toFixed(1) + "%";
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = pct.toFixed(0) + "%";
      row.append(label, track, value);
      return row;
    });
    const extra = document.createElement("div");
    extra.className = "note";
    extra.textContent = note;
    ui.predictions.replaceChildren(...rows, extra);
    ui.predictions.dataset.source = source;
  }

  // ------------------------------------------------------------------ a picture
  async function onFile() {
    const file = ui.file.files && ui.file.files[0];
    if (!file) return;
    stopCamera();
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, {
        imageOrientation: "from-image", // EXIF orientation, as Python applies it
        premultiplyAlpha: "none",
        colorSpaceConversion: "none", // the stored pixels, as Pillow reads them
      });
    } catch (err) {
      setStatus("Cannot read " + file.name + " as a picture: choose a JPEG, PNG, GIF or WebP image.", "error");
      return;
    }
    if (pictureUrl) URL.revokeObjectURL(pictureUrl);
    pictureUrl = URL.createObjectURL(file);
    ui.picture.src = pictureUrl;
    ui.picture.hidden = false;
    ui.video.hidden = true;
    try {
      const image = pixels(bitmap, bitmap.width, bitmap.height);
      const { top, ms } = await classify(image);
      render(top, file.name + " \u00b7 " + ms.toFixed(0) + " ms", "picture");
      setStatus("Ready: choose a picture or start the camera.", "ready");
    } catch (err) {
      setStatus("Cannot classify " + file.name + ": " + describeError(err), "error");
    } finally {
      bitmap.close();
      ui.file.value = ""; // choosing the same file again classifies it again
    }
  }

  // ------------------------------------------------------------------ the webcam
  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus("The browser gives the camera only to pages served over https or from localhost.", "error");
      return;
    }
    ui.start.disabled = true;
    let mine;
    try {
      mine = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (err) {
      ui.start.disabled = false;
      const reason = {
        NotAllowedError: "The camera was not allowed: allow it in the browser's site settings, then press Start camera again.",
        NotFoundError: "No camera was found.",
        NotReadableError: "The camera is in use by another program.",
      }[err && err.name];
      setStatus(reason || "The camera could not be started: " + describeError(err), "error");
      return;
    }
    stream = mine;
    ui.video.srcObject = mine;
    ui.video.hidden = false;
    ui.picture.hidden = true;
    ui.start.hidden = true;
    ui.stop.hidden = false;
    try {
      await ui.video.play();
    } catch (err) {
      // autoplay of a muted video is allowed; a refusal leaves the frame still, frames are read anyway
    }
    setStatus("Camera on: predicting a few times per second.", "ready");
    cameraLoop(mine);
  }

  async function cameraLoop(mine) {
    if (stream !== mine) return;
    const video = ui.video;
    if (video.readyState >= 2 && video.videoWidth > 0) {
      try {
        const image = pixels(video, video.videoWidth, video.videoHeight);
        const { top, ms } = await classify(image);
        if (stream === mine) render(top, "camera \u00b7 " + ms.toFixed(0) + " ms", "camera");
      } catch (err) {
        setStatus("Cannot classify the camera picture: " + describeError(err), "error");
      }
    }
    if (stream === mine) setTimeout(() => cameraLoop(mine), CAMERA_INTERVAL_MS);
  }

  function stopCamera() {
    if (!stream) return;
    for (const track of stream.getTracks()) track.stop();
    stream = null;
    ui.video.srcObject = null;
    ui.video.hidden = true;
    ui.stop.hidden = true;
    ui.start.hidden = false;
    ui.start.disabled = !session;
  }

  ui.file.addEventListener("change", onFile);
  ui.start.addEventListener("click", startCamera);
  ui.stop.addEventListener("click", () => {
    stopCamera();
    setStatus("Camera off.", "ready");
  });
  init();
})();
