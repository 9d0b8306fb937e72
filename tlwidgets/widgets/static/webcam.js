// Webcam widget front end (anywidget ES module).
//
// Shows the camera in a <video>, and sends pictures to Python as custom messages
// whose single binary buffer is the encoded frame (JPEG or PNG):
//   {type: "frame", kind: "capture" | "stream", mime, width, height, burst}
// Python may send {type: "capture" | "start" | "stop" | "stop-burst"}.
//
// Holding Capture down records a burst: a picture at once, then burst_rate pictures per
// second until the button is released or the pointer leaves it (at most burst_max).
// Every frame of one press carries the same burst number; when the press ends, after
// its last frame went out, {type: "burst-end", burst, sent} follows.

const MESSAGES = {
  NotAllowedError: "Camera permission was refused: allow the camera for this page (icon in the address bar), then press Start camera again.",
  NotFoundError: "No camera was found on this computer. You can still upload pictures.",
  NotReadableError: "The camera is busy in another program or tab: close it there, then press Start camera again.",
  OverconstrainedError: "The camera does not support the requested picture size.",
  SecurityError: "The browser blocks the camera on this page: open Jupyter over https or on localhost.",
};

function button(label, cls, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `tlw-webcam-button ${cls}`;
  b.textContent = label;
  b.title = title;
  return b;
}

function render({ model, el }) {
  el.classList.add("tlw-webcam");
  const video = document.createElement("video");
  video.className = "tlw-webcam-video";
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  const screen = document.createElement("div");
  screen.className = "tlw-webcam-screen";
  const placeholder = document.createElement("div");
  placeholder.className = "tlw-webcam-placeholder";
  placeholder.textContent = "Camera off";
  screen.append(video, placeholder);
  const start = button("Start camera", "tlw-webcam-start", "Ask the browser for the camera");
  const capture = button("", "tlw-webcam-capture", "Take a picture; hold the button down to record several per second");
  const status = document.createElement("div");
  status.className = "tlw-webcam-status";
  const bar = document.createElement("div");
  bar.className = "tlw-webcam-bar";
  bar.append(start, capture);
  el.append(screen, bar, status);

  const canvas = document.createElement("canvas");
  let stream = null;
  let timer = null;
  let sending = false;
  let captured = 0;
  let burst = null; // the press being recorded: {id, sent, busy, ended, endSent, timer}
  let bursts = 0;

  function say(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("tlw-webcam-error", isError);
  }

  function setTrait(name, value) {
    try {
      model.set(name, value);
      model.save_changes();
    } catch (e) {
      // The model is gone (widget closed): nothing to tell Python.
    }
  }

  function refresh() {
    const on = stream !== null;
    el.classList.toggle("tlw-webcam-on", on);
    placeholder.style.display = on ? "none" : "";
    video.style.transform = model.get("mirror") ? "scaleX(-1)" : "";
    video.style.maxWidth = `${model.get("width")}px`;
    start.textContent = on ? "Stop camera" : "Start camera";
    capture.textContent = model.get("capture_label");
    capture.disabled = model.get("disabled");
    start.disabled = model.get("disabled");
    if (capture.disabled) stopBurst();
  }

  async function startCamera() {
    if (stream) return true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const msg = MESSAGES.SecurityError;
      say(msg, true);
      setTrait("error", msg);
      return false;
    }
    say("Waiting for the camera...");
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
        audio: false,
      });
    } catch (err) {
      stream = null;
      const msg = MESSAGES[err && err.name] || `The camera could not start (${err && err.name}: ${err && err.message}).`;
      say(msg, true);
      setTrait("error", msg);
      refresh();
      return false;
    }
    video.srcObject = stream;
    try {
      await video.play();
    } catch (e) {
      // autoplay of a muted video is allowed; a refusal only delays the first frame
    }
    if (!video.videoWidth) {
      await new Promise((resolve) => {
        video.addEventListener("loadedmetadata", resolve, { once: true });
        setTimeout(resolve, 3000);
      });
    }
    say("");
    setTrait("error", "");
    setTrait("active", true);
    refresh();
    restartTimer();
    return true;
  }

  function stopCamera() {
    if (stream) {
      for (const track of stream.getTracks()) track.stop();
    }
    stream = null;
    video.srcObject = null;
    stopBurst();
    clearInterval(timer);
    timer = null;
    setTrait("active", false);
    refresh();
  }

  async function grab(kind, extra = {}) {
    if (!stream || !video.videoWidth) return false;
    const w = video.videoWidth;
    const h = video.videoHeight;
    const scale = Math.min(1, model.get("max_size") / Math.max(w, h));
    canvas.width = Math.round(w * scale);
    canvas.height = Math.round(h * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    const mime = model.get("format");
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, mime, model.get("quality")));
    if (!blob) return false;
    const buffer = await blob.arrayBuffer();
    model.send({ type: "frame", kind, mime: blob.type, width: canvas.width, height: canvas.height, ...extra }, undefined, [
      buffer,
    ]);
    return true;
  }

  function flash() {
    el.classList.add("tlw-webcam-flash");
    setTimeout(() => el.classList.remove("tlw-webcam-flash"), 150);
  }

  async function takePicture() {
    if (!(await startCamera())) return;
    if (await grab("capture")) {
      captured += 1;
      flash();
      say(`${captured} picture${captured === 1 ? "" : "s"} sent`);
    }
  }

  function startBurst() {
    if (burst || capture.disabled) return;
    bursts += 1;
    const b = { id: bursts, sent: 0, busy: false, ended: false, endSent: false, timer: null };
    burst = b;
    shoot(b, true);
    const rate = model.get("burst_rate");
    if (rate > 0) b.timer = setInterval(() => shoot(b, false), Math.max(100, 1000 / rate));
  }

  async function shoot(b, first) {
    if (b.busy || (b.ended && !first)) return; // never queue pictures faster than they go out
    b.busy = true;
    try {
      if (!(await startCamera())) return endBurst(b);
      if (b.sent >= model.get("burst_max")) return endBurst(b);
      if (await grab("capture", { burst: b.id })) {
        b.sent += 1;
        captured += 1;
        flash();
        say(b.sent > 1 ? `${b.sent} frames` : `${captured} picture${captured === 1 ? "" : "s"} sent`);
      }
      if (b.sent >= model.get("burst_max")) endBurst(b);
    } finally {
      b.busy = false;
      if (b.ended) sendBurstEnd(b);
    }
  }

  function endBurst(b) {
    b.ended = true;
    clearInterval(b.timer);
    b.timer = null;
    if (burst === b) burst = null;
    if (!b.busy) sendBurstEnd(b); // otherwise once its last frame went out
  }

  function sendBurstEnd(b) {
    if (b.endSent) return;
    b.endSent = true;
    if (b.sent > 1) say(`${b.sent} frames sent`);
    try {
      model.send({ type: "burst-end", burst: b.id, sent: b.sent });
    } catch (e) {
      // The model is gone (widget closed).
    }
  }

  function stopBurst() {
    if (burst) endBurst(burst);
  }

  function restartTimer() {
    clearInterval(timer);
    timer = null;
    if (!stream || !model.get("streaming")) return;
    timer = setInterval(async () => {
      if (sending) return; // never queue frames faster than they go out
      sending = true;
      try {
        await grab("stream");
      } finally {
        sending = false;
      }
    }, Math.max(50, model.get("interval_ms")));
  }

  start.addEventListener("click", () => (stream ? stopCamera() : startCamera()));
  capture.addEventListener("pointerdown", (e) => {
    if (e.button === 0) startBurst();
  });
  for (const name of ["pointerup", "pointerleave", "pointercancel"]) capture.addEventListener(name, stopBurst);
  capture.addEventListener("click", (e) => {
    if (e.detail === 0) takePicture(); // Enter or Space: pointer presses are bursts
  });
  capture.addEventListener("contextmenu", (e) => e.preventDefault()); // a long touch is a burst, not a menu
  window.addEventListener("blur", stopBurst);
  const onMessage = (msg) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "capture") takePicture();
    else if (msg.type === "start") startCamera();
    else if (msg.type === "stop") stopCamera();
    else if (msg.type === "stop-burst") stopBurst();
  };
  const onLook = () => refresh();
  model.on("msg:custom", onMessage);
  model.on("change:streaming", restartTimer);
  model.on("change:interval_ms", restartTimer);
  for (const name of ["mirror", "width", "capture_label", "disabled"]) model.on(`change:${name}`, onLook);
  refresh();
  if (model.get("autostart")) startCamera();

  return () => {
    model.off("msg:custom", onMessage);
    model.off("change:streaming", restartTimer);
    model.off("change:interval_ms", restartTimer);
    for (const name of ["mirror", "width", "capture_label", "disabled"]) model.off(`change:${name}`, onLook);
    window.removeEventListener("blur", stopBurst);
    stopCamera();
  };
}

export default { render };
