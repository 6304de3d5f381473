// The new-dataset form: shows the fields of the chosen source, previews every resize mode on a
// sample image of that source as the options change, and uploads an archive with a progress bar.
(function () {
  const form = document.getElementById("dataset-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const value = (name) => (form.elements[name] ? form.elements[name].value.trim() : "");
  const IMAGE = /\.(png|jpe?g|bmp|gif|tiff?|webp)$/i;

  // --- Which source ---------------------------------------------------------------------------
  function sourceType() {
    const checked = form.querySelector("input[name=source_type]:checked");
    return checked ? checked.value : "folder";
  }
  function showSource() {
    const type = sourceType();
    form.querySelectorAll("[data-source]").forEach((section) => {
      section.hidden = section.dataset.source !== type;
    });
    form.querySelectorAll(".ds-tab").forEach((tab) => {
      tab.classList.toggle("active", tab.querySelector("input").checked);
    });
    schedulePreview();
  }
  if (!form.querySelector("input[name=source_type]:checked")) {
    form.querySelector("input[name=source_type][value=folder]").checked = true;
  }
  form.querySelectorAll("input[name=source_type]").forEach((radio) => radio.addEventListener("change", showSource));
  ["id_source_folder", "id_val_folder", "id_test_folder", "id_list_prefix"].forEach((id) => $(id).setAttribute("list", "folders"));

  // A separate folder or list replaces the percentage carved from training.
  function syncPercents() {
    const type = sourceType();
    const separate = {
      val: type === "folder" ? value("val_folder") || "" : value("val_list") || ($("id_val_list_upload").files.length ? "x" : ""),
      test: type === "folder" ? value("test_folder") || "" : value("test_list") || ($("id_test_list_upload").files.length ? "x" : ""),
    };
    for (const split of ["val", "test"]) {
      const input = $(`id_${split}_percent`);
      const own = type !== "archive" && separate[split] !== "";
      input.disabled = own;
      input.title = own ? "Taken from its own folder or list" : "";
    }
  }
  form.addEventListener("input", syncPercents);
  form.addEventListener("change", syncPercents);

  // --- Preview --------------------------------------------------------------------------------
  let timer = null;
  let sample = null; // {name, blob}: an image taken from the chosen archive, or the user's own
  let request = 0;
  function schedulePreview() {
    clearTimeout(timer);
    timer = setTimeout(preview, 350);
  }
  ["id_source_folder", "id_list_prefix", "id_width", "id_height", "id_channels"].forEach((id) => {
    $(id).addEventListener("input", schedulePreview);
    $(id).addEventListener("change", schedulePreview);
  });

  async function preview() {
    const params = new URLSearchParams({ width: value("width"), height: value("height"), channels: value("channels") });
    const type = sourceType();
    let options;
    if (sample && (type === "archive" || $("preview-image").files.length)) {
      const body = new FormData();
      params.forEach((v, k) => body.append(k, v));
      body.append("image", sample.blob, sample.name);
      options = { method: "POST", body, headers: { "X-CSRFToken": form.elements.csrfmiddlewaretoken.value } };
    } else {
      const folder = type === "folder" ? value("source_folder") : type === "lists" ? value("list_prefix") : "";
      if (folder) params.set("folder", folder);
      else if (value("clone_of")) params.set("clone_of", value("clone_of"));
      else {
        clearImages();
        return status(`${type === "archive" ? "Choose an archive" : "Name a folder"} to see each resize mode on its first image.`);
      }
      options = {};
    }
    const mine = ++request;
    status("Loading the preview…");
    try {
      const response = await fetch(`${form.dataset.previewUrl}?${options.method ? "" : params}`, options);
      const data = await response.json();
      if (mine !== request) return; // a newer preview is on its way
      if (!response.ok) return status(data.error || "No preview.", true);
      show(data);
    } catch (error) {
      if (mine === request) status("The preview could not be loaded.", true);
    }
  }

  function status(text, isError) {
    const line = $("preview-status");
    line.textContent = text;
    line.classList.toggle("error", Boolean(isError));
    if (isError) clearImages();
  }
  function clearImages() {
    document.querySelector(".ds-original").hidden = true;
    $("preview-modes").hidden = true;
    form.querySelectorAll(".ds-mode img").forEach((img) => img.removeAttribute("src"));
  }
  function show(data) {
    $("preview-status").textContent = `${data.width}×${data.height}, as the network will see it. Click one to choose it.`;
    $("preview-status").classList.remove("error");
    $("preview-original").src = data.original;
    $("preview-name").textContent = data.name;
    document.querySelector(".ds-original").hidden = false;
    $("preview-modes").hidden = false;
    form.querySelectorAll(".ds-mode").forEach((button) => {
      button.querySelector("img").src = data.modes[button.dataset.mode];
    });
    markMode();
  }
  function markMode() {
    form.querySelectorAll(".ds-mode").forEach((button) => {
      button.classList.toggle("selected", button.dataset.mode === value("resize_mode"));
    });
  }
  form.querySelectorAll(".ds-mode").forEach((button) =>
    button.addEventListener("click", () => {
      $("id_resize_mode").value = button.dataset.mode;
      markMode();
    }),
  );
  $("id_resize_mode").addEventListener("change", markMode);

  $("preview-image").addEventListener("change", () => {
    const file = $("preview-image").files[0];
    sample = file ? { name: file.name, blob: file } : null;
    schedulePreview();
  });
  $("id_archive").addEventListener("change", async () => {
    const file = $("id_archive").files[0];
    sample = null;
    if (!file) return schedulePreview();
    status("Looking for a first image in the archive…");
    try {
      sample = await firstImageIn(file);
    } catch (error) {
      sample = null;
    }
    if (!sample) return status("No image found at the start of this archive; try one of yours below.");
    schedulePreview();
  });

  // The first image of a .zip, .tar or .tar.gz, read in the browser (only that one entry is
  // inflated), so the preview works before anything is uploaded.
  async function firstImageIn(file) {
    const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
    if (head[0] === 0x50 && head[1] === 0x4b) return firstInZip(file);
    if (head[0] === 0x1f && head[1] === 0x8b) return firstInTar(file.stream().pipeThrough(new DecompressionStream("gzip")));
    return firstInTar(file.stream());
  }
  const wanted = (name) => IMAGE.test(name) && !name.split("/").some((part) => part.startsWith(".") || part === "__MACOSX");

  async function firstInZip(file) {
    const tailSize = Math.min(file.size, 65557);
    const tail = new DataView(await file.slice(file.size - tailSize).arrayBuffer());
    let end = -1;
    for (let i = tailSize - 22; i >= 0; i--) if (tail.getUint32(i, true) === 0x06054b50) { end = i; break; }
    if (end < 0) return null;
    const count = tail.getUint16(end + 10, true);
    const dirSize = tail.getUint32(end + 12, true);
    const dirOffset = tail.getUint32(end + 16, true);
    const dir = new DataView(await file.slice(dirOffset, dirOffset + dirSize).arrayBuffer());
    const decoder = new TextDecoder();
    for (let p = 0, n = 0; n < count && p + 46 <= dir.byteLength; n++) {
      const method = dir.getUint16(p + 10, true);
      const packed = dir.getUint32(p + 20, true);
      const nameLength = dir.getUint16(p + 28, true);
      const skip = nameLength + dir.getUint16(p + 30, true) + dir.getUint16(p + 32, true);
      const local = dir.getUint32(p + 42, true);
      const name = decoder.decode(new Uint8Array(dir.buffer, dir.byteOffset + p + 46, nameLength));
      p += 46 + skip;
      if (!wanted(name) || (method !== 0 && method !== 8) || packed > 20e6) continue;
      const header = new DataView(await file.slice(local, local + 30).arrayBuffer());
      const start = local + 30 + header.getUint16(26, true) + header.getUint16(28, true);
      let blob = file.slice(start, start + packed);
      if (method === 8) blob = await new Response(blob.stream().pipeThrough(new DecompressionStream("deflate-raw"))).blob();
      return { name: name.split("/").pop(), blob };
    }
    return null;
  }

  async function firstInTar(stream) {
    const reader = stream.getReader();
    let buffer = new Uint8Array(0);
    let seen = 0;
    const need = async (size) => {
      while (buffer.length < size) {
        const { done, value: chunk } = await reader.read();
        if (done) return false;
        const joined = new Uint8Array(buffer.length + chunk.length);
        joined.set(buffer);
        joined.set(chunk, buffer.length);
        buffer = joined;
      }
      return true;
    };
    const text = (bytes) => new TextDecoder().decode(bytes).replace(/\0.*$/s, "");
    try {
      while (seen++ < 2000 && (await need(512))) {
        const header = buffer.subarray(0, 512);
        const name = text(header.subarray(345, 500)) ? `${text(header.subarray(345, 500))}/${text(header.subarray(0, 100))}` : text(header.subarray(0, 100));
        if (!name) return null; // the end-of-archive blocks
        const size = parseInt(text(header.subarray(124, 136)).trim() || "0", 8);
        const type = String.fromCharCode(header[156] || 48);
        const padded = 512 + Math.ceil(size / 512) * 512;
        if ((type === "0" || type === "\0") && wanted(name) && size <= 20e6) {
          if (!(await need(512 + size))) return null;
          return { name: name.split("/").pop(), blob: new Blob([buffer.slice(512, 512 + size)]) };
        }
        if (!(await need(padded))) return null;
        buffer = buffer.slice(padded);
      }
      return null;
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // --- Upload with progress -----------------------------------------------------------------------
  form.addEventListener("submit", (event) => {
    // Only named inputs are sent: the preview's own image (unnamed) is not part of the dataset.
    const hasFile = Array.from(form.querySelectorAll("input[type=file][name]")).some((input) => input.files.length);
    if (!hasFile) return;
    event.preventDefault();
    const body = new FormData(form);
    const xhr = new XMLHttpRequest();
    $("upload-progress").hidden = false;
    $("create").disabled = true;
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      $("upload-bar").max = e.total;
      $("upload-bar").value = e.loaded;
      $("upload-text").textContent = `Uploading… ${(e.loaded / 1e6).toFixed(1)} of ${(e.total / 1e6).toFixed(1)} MB`;
    };
    xhr.upload.onload = () => ($("upload-text").textContent = "Uploaded; checking the archive…");
    xhr.onload = () => {
      if (xhr.responseURL && new URL(xhr.responseURL).pathname !== new URL(form.action || location.href, location.href).pathname) {
        location.href = xhr.responseURL; // created: the dataset's page
      } else {
        document.open();
        document.write(xhr.responseText); // the form again, with its errors
        document.close();
      }
    };
    xhr.onerror = () => {
      $("create").disabled = false;
      $("upload-text").textContent = "The upload failed; check the connection and try again.";
    };
    xhr.open("POST", form.action || location.href);
    xhr.send(body);
  });

  showSource();
  syncPercents();
})();
