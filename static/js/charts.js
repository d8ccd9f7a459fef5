/* Draws the dashboard charts from the numbers the page embeds with json_script. */
(function () {
  "use strict";
  function draw() {
    var node = document.getElementById("chart-data");
    if (!node || typeof Chart === "undefined") return;
    var data = JSON.parse(node.textContent);
    var accent = "#1f5fbf";
    var currency = data.currency || "EUR";
    var moneyFormat;
    try {
      moneyFormat = new Intl.NumberFormat("en", { style: "currency", currency: currency, maximumFractionDigits: 0 });
    } catch (e) {
      moneyFormat = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
    }
    var money = function (v) { return moneyFormat.format(Number(v)); };
    var moneyTooltip = { callbacks: { label: function (ctx) { return (ctx.dataset.label ? ctx.dataset.label + ": " : "") + money(ctx.parsed.y !== undefined && ctx.chart.options.indexAxis !== "y" ? ctx.parsed.y : ctx.parsed.x); } } };
    var common = {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { display: false } },
    };
    window.crmCharts = window.crmCharts || {};
    function make(id, config) {
      var canvas = document.getElementById(id);
      if (!canvas) return;
      window.crmCharts[id] = new Chart(canvas, config);
    }
    make("chart-trend", {
      type: "line",
      data: { labels: data.trend.labels, datasets: [{ label: "Portfolio CLV", data: data.trend.values, borderColor: accent, backgroundColor: "rgba(31,95,191,0.15)", fill: true, tension: 0.2 }] },
      options: Object.assign({}, common, { plugins: { legend: { display: false }, tooltip: moneyTooltip }, scales: { y: { ticks: { callback: money } } } }),
    });
    make("chart-histogram", {
      type: "bar",
      data: { labels: data.histogram.labels, datasets: [{ label: "Customers", data: data.histogram.values, backgroundColor: "#3d7bd9" }] },
      options: Object.assign({}, common, { scales: { x: { title: { display: true, text: "CLV (" + currency + ")" } }, y: { title: { display: true, text: "Customers" } } } }),
    });
    make("chart-salespeople", {
      type: "bar",
      data: { labels: data.by_salesperson.labels, datasets: [{ label: "CLV", data: data.by_salesperson.values, backgroundColor: "#1d7a46" }] },
      options: Object.assign({}, common, { indexAxis: "y", plugins: { legend: { display: false }, tooltip: moneyTooltip }, scales: { x: { ticks: { callback: money } } } }),
    });
    var palette = ["#1f5fbf", "#d98e04", "#1d7a46", "#b42318"];
    make("chart-pipeline", {
      type: "bar",
      data: {
        labels: data.pipeline.labels,
        datasets: data.pipeline.datasets.map(function (d, i) {
          return { label: d.label, data: d.values, backgroundColor: palette[i % palette.length] };
        }),
      },
      options: Object.assign({}, common, {
        plugins: { legend: { display: true, position: "bottom" }, tooltip: moneyTooltip },
        scales: { x: { stacked: true }, y: { stacked: true, ticks: { callback: money }, title: { display: true, text: "Expected value (" + currency + ")" } } },
      }),
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
