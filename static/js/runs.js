/* Draws the CLV runs page's calibration chart: actual against predicted purchases by calibration frequency. */
(function () {
  "use strict";
  function draw() {
    var node = document.getElementById("calibration-data");
    var canvas = document.getElementById("chart-calibration");
    if (!node || !canvas || typeof Chart === "undefined") return;
    var data = JSON.parse(node.textContent);
    window.crmCharts = window.crmCharts || {};
    window.crmCharts["chart-calibration"] = new Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Actual", data: data.actual, borderColor: "#1b1f24", backgroundColor: "#1b1f24", tension: 0 },
          { label: "Predicted", data: data.predicted, borderColor: "#1f5fbf", backgroundColor: "#1f5fbf", borderDash: [6, 4], tension: 0 },
        ],
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { display: true, position: "bottom" } },
        scales: {
          x: { title: { display: true, text: "Repeat purchases in the calibration period" } },
          y: { beginAtZero: true, title: { display: true, text: "Purchases per customer in the holdout" } },
        },
      },
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
