// Download widget front end (anywidget ES module).
//
// Python sends a file as custom widget messages:
//   {type: "begin", id, name, size, chunks, mime}
//   {type: "chunk", id, index}  with one binary buffer: the next piece of the file
//   {type: "end", id}
// Once every piece has arrived (count and size checked), the pieces become a Blob and
// a click on an <a download=name> link with an object URL hands it to the browser's
// downloads. The browser answers {type: "delivered", id, size} or {type: "failed", id, reason}.
//
// The pieces are gathered once per widget model (initialize), so a widget shown twice
// still downloads once; each view only shows the progress.

function initialize({ model }) {
  const files = new Map();

  function answer(content) {
    try {
      model.send(content);
    } catch (e) {
      // The model is gone (widget closed): nobody to tell.
    }
  }

  function save(file) {
    const blob = new Blob(file.parts, { type: file.mime || "application/octet-stream" });
    file.parts = [];
    if (blob.size !== file.size) {
      answer({ type: "failed", id: file.id, reason: `received ${blob.size} of ${file.size} bytes` });
      return;
    }
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = file.name;
    link.style.display = "none";
    document.body.appendChild(link);
    link.click();
    link.remove();
    // The browser has started reading the blob; let it go once it surely has.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    answer({ type: "delivered", id: file.id, size: blob.size });
  }

  const onMessage = (msg, buffers) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "begin") {
      files.set(msg.id, {
        id: msg.id, name: String(msg.name || "download"), size: Number(msg.size) || 0,
        chunks: Number(msg.chunks) || 0, mime: msg.mime, parts: [], received: 0,
      });
      return;
    }
    const file = files.get(msg.id);
    if (!file) return;
    if (msg.type === "chunk") {
      const piece = buffers && buffers[0];
      if (msg.index !== file.parts.length || !piece) {
        files.delete(msg.id);
        answer({ type: "failed", id: msg.id, reason: `piece ${msg.index} arrived out of order or empty` });
        return;
      }
      file.parts.push(piece);
      file.received += piece.byteLength;
    } else if (msg.type === "end") {
      files.delete(msg.id);
      if (file.parts.length !== file.chunks) {
        answer({ type: "failed", id: msg.id, reason: `received ${file.parts.length} of ${file.chunks} pieces` });
        return;
      }
      save(file);
    }
  };
  model.on("msg:custom", onMessage);
  return () => model.off("msg:custom", onMessage);
}

function render({ model, el }) {
  el.classList.add("tlw-download");
  const line = document.createElement("span");
  line.className = "tlw-download-progress";
  el.append(line);
  let expected = { size: 0, received: 0, name: "" };
  const onMessage = (msg, buffers) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "begin") {
      expected = { size: Number(msg.size) || 0, received: 0, name: String(msg.name || "") };
      line.textContent = `Sending ${expected.name} to the browser…`;
    } else if (msg.type === "chunk" && buffers && buffers[0]) {
      expected.received += buffers[0].byteLength;
      const share = expected.size ? Math.floor((100 * expected.received) / expected.size) : 100;
      line.textContent = `Sending ${expected.name} to the browser… ${share}%`;
    } else if (msg.type === "end") {
      line.textContent = "";
    }
  };
  model.on("msg:custom", onMessage);
  return () => model.off("msg:custom", onMessage);
}

export default { initialize, render };
