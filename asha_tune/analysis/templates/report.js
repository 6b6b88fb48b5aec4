/* asha-tune report: sortable tables, and the charts drawn with the Plotly inlined in this page. */
(function () {
  "use strict";

  // --- tables: a click on a heading sorts by that column (again: the other way) ---
  function key(cell) {
    var sort = cell.getAttribute("data-sort");
    var text = sort === null ? cell.textContent.trim() : sort;
    var number = Number(text);
    return text !== "" && !isNaN(number) ? [0, number] : [1, text.toLowerCase()];
  }
  function sortBy(table, column, heading) {
    var ascending = heading.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    heading.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      var order = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, column) {
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortBy(table, column, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, column, th); }
      });
    });
  });

  // --- charts: Plotly's code travels gzipped in the page; the browser unpacks it, no request ---
  function loadPlotly() {
    var packed = atob(document.getElementById("plotly-gz").textContent.trim());
    var bytes = new Uint8Array(packed.length);
    for (var i = 0; i < packed.length; i++) bytes[i] = packed.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(function (code) {
      window.PlotlyConfig = { MathJaxConfig: "local" };
      var script = document.createElement("script");
      script.textContent = code;
      document.head.appendChild(script);
      if (!window.Plotly) throw new Error("Plotly did not load");
    });
  }
  function say(holders, text) {
    holders.forEach(function (holder) { holder.className += " unavailable"; holder.textContent = text; });
  }
  function draw() {
    var holders = Array.prototype.slice.call(document.querySelectorAll("[data-figure]"));
    if (!holders.length) { document.body.setAttribute("data-plots", "none"); return; }
    if (typeof DecompressionStream === "undefined") {
      say(holders, "This browser cannot unpack the charts (it lacks DecompressionStream: use a current " +
        "Chrome, Edge, Firefox or Safari). Every figure is in the tables.");
      document.body.setAttribute("data-plots", "unavailable");
      return;
    }
    loadPlotly().then(function () {
      var template = JSON.parse(document.getElementById("plotly-template").textContent);
      var drawn = holders.map(function (holder) {
        var figure = JSON.parse(document.getElementById(holder.getAttribute("data-figure")).textContent);
        figure.layout.template = template;
        holder.style.height = (figure.layout.height || 450) + "px";  // responsive: the width follows the page
        return window.Plotly.newPlot(holder, figure.data, figure.layout, {
          responsive: true, displaylogo: false, showSendToCloud: false, showEditInChartStudio: false
        });
      });
      return Promise.all(drawn);
    }).then(function () {
      document.body.setAttribute("data-plots", "drawn");
    }, function (error) {
      say(holders, "The charts could not be drawn (" + error + "). Every figure is in the tables.");
      document.body.setAttribute("data-plots", "failed");
    });
  }
  draw();
})();
