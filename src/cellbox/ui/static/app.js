// cellbox console: the live sandbox list, file uploads, and what every page needs.
// No inline scripts anywhere (CSP script-src 'self'): pages carry data-* attributes.
(function () {
  "use strict";
  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  // One navigation away, not two: logging out ends the session, so the live feed's
  // "logout" event and htmx's HX-Redirect both want /ui/login, and the second
  // aborted the first (seen as net::ERR_ABORTED in the browser test).
  let leaving = false;
  function leave(url) {
    if (leaving) return;
    leaving = true;
    window.location.href = url;
  }
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "logout") leaving = true;  // its HX-Redirect navigates
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (e.detail.elt && e.detail.elt.id === "logout" && !e.detail.successful) leaving = false;
  });
  window.cellbox = { csrf: csrf, leave: leave };

  function liveList() {
    const rows = document.getElementById("rows");
    if (!rows || !rows.dataset.feed) return;
    const es = new EventSource(rows.dataset.feed);
    es.addEventListener("rows", function (e) {
      const checked = new Set(Array.from(rows.querySelectorAll("input[name=ids]:checked")).map(function (i) { return i.value; }));
      rows.innerHTML = e.data;
      rows.querySelectorAll("input[name=ids]").forEach(function (i) { if (checked.has(i.value)) i.checked = true; });
      if (window.htmx) window.htmx.process(rows);
      rows.dataset.updated = String(Date.now());
    });
    es.addEventListener("logout", function () { es.close(); leave("/ui/login"); });
  }

  function currentDir() {
    const t = document.querySelector("#files table[data-path]");
    return t ? t.dataset.path : "/";
  }

  async function upload(sandbox, files) {
    const flash = document.getElementById("flash");
    for (const f of files) {
      const dir = currentDir();
      const path = (dir.endsWith("/") ? dir : dir + "/") + f.name;
      const r = await fetch("/ui/sandboxes/" + sandbox + "/files?path=" + encodeURIComponent(path),
        { method: "PUT", headers: { "X-CSRF-Token": csrf(), "HX-Request": "true" }, body: f });
      if (r.ok) flash.textContent = "uploaded " + path; else flash.innerHTML = await r.text();
    }
    document.body.dispatchEvent(new Event("files-changed"));
  }

  function dropzone() {
    const zone = document.getElementById("dropzone");
    if (!zone) return;
    const sandbox = zone.dataset.sandbox;
    zone.addEventListener("dragover", function (e) { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("over");
      upload(sandbox, e.dataTransfer.files);
    });
    const input = document.createElement("input");
    input.type = "file";
    input.id = "upload-input";
    input.multiple = true;
    input.addEventListener("change", function () { upload(sandbox, input.files); });
    zone.appendChild(input);
  }

  function followJobs(root) {
    root.querySelectorAll("pre.job-log[data-feed]").forEach(function (pre) {
      if (pre.dataset.following) return;
      pre.dataset.following = "1";
      const es = new EventSource(pre.dataset.feed);
      es.addEventListener("line", function (e) { pre.textContent += e.data + "\n"; pre.scrollTop = pre.scrollHeight; });
      es.addEventListener("done", function (e) {
        es.close();
        const out = pre.parentElement.querySelector(".outcome");
        if (out) out.textContent = e.data;
      });
    });
  }

  function buildForm() {
    const form = document.getElementById("build-form");
    if (!form) return;
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      const file = document.getElementById("dockerfile-input").files[0];
      const name = form.querySelector("input[name=name]").value;
      const r = await fetch(form.dataset.action + "?name=" + encodeURIComponent(name),
        { method: "POST", headers: { "X-CSRF-Token": csrf(), "HX-Request": "true" }, body: file });
      const html = await r.text();
      const target = r.ok ? document.getElementById("jobs") : document.getElementById("flash");
      if (r.ok) target.insertAdjacentHTML("afterbegin", html); else target.innerHTML = html;
      followJobs(target);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    liveList();
    dropzone();
    buildForm();
    followJobs(document);
    document.body.addEventListener("htmx:afterSwap", function (e) { followJobs(e.target); });
  });
})();
