// Live charts of one sandbox (CPU, memory, network) from its stats feed (ui/live.py), drawn with uPlot.
(function () {
  "use strict";
  const KEEP = 120;
  function chart(el, title, series) {
    const data = [[]].concat(series.map(function () { return []; }));
    const opts = { title: title, width: 360, height: 160, series: [{}].concat(series.map(function (s, i) {
      return { label: s, stroke: ["#2a7", "#27a", "#a72"][i] };
    })) };
    return { plot: new window.uPlot(opts, data, el), data: data };
  }
  document.addEventListener("DOMContentLoaded", function () {
    const host = document.getElementById("charts");
    if (!host || !window.uPlot) return;
    const charts = {
      cpu: chart(host, "CPU (cores)", ["cpu"]),
      mem: chart(host, "memory (MiB)", ["memory"]),
      net: chart(host, "network (KiB/s)", ["in", "out"]),
    };
    window.cellboxCharts = charts;  // for the browser tests
    function push(c, t, values) {
      c.data[0].push(t);
      values.forEach(function (v, i) { c.data[i + 1].push(v); });
      if (c.data[0].length > KEEP) c.data.forEach(function (a) { a.shift(); });
      c.plot.setData(c.data);
    }
    const es = new EventSource(host.dataset.feed);
    es.addEventListener("stats", function (e) {
      const s = JSON.parse(e.data);
      push(charts.cpu, s.t, [s.cpu]);
      push(charts.mem, s.t, [s.memory_mb]);
      push(charts.net, s.t, [s.net_in == null ? null : s.net_in / 1024, s.net_out == null ? null : s.net_out / 1024]);
      const st = document.getElementById("status");
      if (st && st.textContent !== s.status) { st.textContent = s.status; st.className = "status " + s.status; }
    });
    es.addEventListener("logout", function () { es.close(); window.cellbox.leave("/ui/login"); });
  });
})();
