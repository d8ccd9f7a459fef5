/* Draws the analytics answers' charts (horizontal bars: their labels stay readable at phone width). */
(function () {
  "use strict";
  function draw() {
    var node = document.getElementById("analytics-charts");
    if (!node || typeof Chart === "undefined") return;
    var charts = JSON.parse(node.textContent);
    var fmt = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
    window.crmCharts = window.crmCharts || {};
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var data = charts[canvas.dataset.chart];
      if (!data) return;
      var unit = data.unit || "";
      var show = function (v) { return unit === "%" ? fmt.format(v) + "%" : unit === "×" ? fmt.format(v) + "×" : (unit ? fmt.format(v) + " " + unit : fmt.format(v)); };
      window.crmCharts[canvas.id] = new Chart(canvas, {
        type: "bar",
        data: { labels: data.labels, datasets: [{ label: data.label, data: data.values, backgroundColor: "#1f5fbf" }] },
        options: {
          indexAxis: "y", responsive: true, maintainAspectRatio: false, animation: false,
          plugins: { legend: { display: false }, tooltip: { callbacks: { label: function (ctx) { return data.label + ": " + show(ctx.parsed.x); } } } },
          scales: { x: { ticks: { callback: show } }, y: { ticks: { autoSkip: false, font: { size: 11 } } } },
        },
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
