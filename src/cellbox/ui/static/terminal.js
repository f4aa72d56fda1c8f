// Terminal tabs: xterm.js over the console's PTY relay (ui/terminal.py).
// Frames are the agent's (spec 3.3): 0x00 input/output, 0x01 resize (cols, rows as
// u16 big-endian), 0x02 ready, 0x03 exit code. Session IDs are kept in
// sessionStorage so a reload re-attaches to the same PTYs.
(function () {
  "use strict";
  const enc = new TextEncoder();
  window.cellboxTerms = [];

  function frame(op, bytes) {
    const b = new Uint8Array(1 + bytes.length);
    b[0] = op;
    b.set(bytes, 1);
    return b;
  }
  function resizeFrame(cols, rows) {
    return new Uint8Array([1, cols >> 8, cols & 255, rows >> 8, rows & 255]);
  }
  function storeKey(sandbox) { return "cellbox-pty-" + sandbox; }
  function saved(sandbox) {
    try { return JSON.parse(sessionStorage.getItem(storeKey(sandbox)) || "[]"); } catch (e) { return []; }
  }
  function save(sandbox, ids) { sessionStorage.setItem(storeKey(sandbox), JSON.stringify(ids)); }

  async function newSession(sandbox) {
    const r = await fetch("/ui/sandboxes/" + sandbox + "/pty", {
      method: "POST", headers: { "X-CSRF-Token": window.cellbox.csrf(), "Content-Type": "application/json" },
      body: JSON.stringify({ rows: 24, cols: 80 }),
    });
    if (!r.ok) throw new Error(await r.text());
    return (await r.json()).session_id;
  }

  // focus only on the user's own action (a tab click, a new tab): a terminal opening
  // at page load must not take the keyboard from a field the user is typing in.
  function show(index, focus) {
    document.querySelectorAll("#terminals .term").forEach(function (el, i) { el.hidden = i !== index; });
    document.querySelectorAll("#term-tabs .tab").forEach(function (el, i) { el.classList.toggle("active", i === index); });
    const t = window.cellboxTerms[index];
    if (t) { t.fit.fit(); if (focus) t.term.focus(); }
  }

  function attach(sandbox, sessionId, onGone, focus) {
    const box = document.createElement("div");
    box.className = "term";
    document.getElementById("terminals").appendChild(box);
    const term = new window.Terminal({ fontSize: 14, scrollback: 5000 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    const proto = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(proto + "://" + window.location.host + "/ui/sandboxes/" + sandbox + "/pty/" +
      encodeURIComponent(sessionId) + "/ws");
    ws.binaryType = "arraybuffer";
    const entry = { term: term, fit: fit, ws: ws, sessionId: sessionId, open: false };
    ws.onopen = function () {
      entry.open = true;
      ws.send(new Uint8Array([2]));
      ws.send(resizeFrame(term.cols, term.rows));
    };
    ws.onmessage = function (e) {
      const d = new Uint8Array(e.data);
      if (d[0] === 0) term.write(d.subarray(1));
      else if (d[0] === 3) term.write("\r\n[session ended]\r\n");
    };
    ws.onclose = function () {
      if (!entry.open) { box.remove(); onGone(); }
    };
    term.onData(function (s) { if (ws.readyState === 1) ws.send(frame(0, enc.encode(s))); });
    term.onResize(function (size) { if (ws.readyState === 1) ws.send(resizeFrame(size.cols, size.rows)); });
    window.cellboxTerms.push(entry);
    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "tab";
    tab.textContent = "tab " + window.cellboxTerms.length;
    const index = window.cellboxTerms.length - 1;
    tab.addEventListener("click", function () { show(index, true); });
    const close = document.createElement("button");
    close.type = "button";
    close.className = "tab-close";
    close.textContent = "×";
    close.title = "close this terminal (ends its shell)";
    close.addEventListener("click", async function () {
      await fetch("/ui/sandboxes/" + sandbox + "/pty/" + encodeURIComponent(sessionId) + "/close",
        { method: "POST", headers: { "X-CSRF-Token": window.cellbox.csrf() } });
      save(sandbox, saved(sandbox).filter(function (x) { return x !== sessionId; }));
      entry.closed = true;
      ws.close();
      box.remove();
      tab.remove();
      close.remove();
    });
    const bar = document.getElementById("term-tabs");
    bar.insertBefore(tab, document.getElementById("term-new"));
    bar.insertBefore(close, document.getElementById("term-new"));
    show(index, focus);
    return entry;
  }

  async function openNew(sandbox, focus) {
    const id = await newSession(sandbox);
    save(sandbox, saved(sandbox).concat([id]));
    attach(sandbox, id, function () { save(sandbox, saved(sandbox).filter(function (x) { return x !== id; })); }, focus);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const host = document.getElementById("terminals");
    if (!host || !window.Terminal) return;
    const sandbox = host.dataset.sandbox;
    if (document.getElementById("status").textContent.trim() !== "running") return;
    const ids = saved(sandbox);
    let pending = ids.length;
    const gone = function (id) {
      return function () {
        save(sandbox, saved(sandbox).filter(function (x) { return x !== id; }));
        if (saved(sandbox).length === 0 && --pending <= 0) openNew(sandbox);
      };
    };
    if (ids.length === 0) openNew(sandbox);
    else ids.forEach(function (id) { attach(sandbox, id, gone(id)); });
    document.getElementById("term-new").addEventListener("click", function () { openNew(sandbox, true); });
    window.addEventListener("resize", function () { window.cellboxTerms.forEach(function (t) { t.fit.fit(); }); });
  });
})();
