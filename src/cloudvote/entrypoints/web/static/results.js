// Live results: the server pushes tallies over server-sent events; the page redraws
// the bars in place. EventSource reconnects by itself after a network blip or a rollout.
(function () {
  "use strict";
  const chart = document.getElementById("chart");
  const status = document.getElementById("status");

  function draw(results) {
    if (results.unavailable) {
      status.textContent = "results store unavailable, retrying";
      return;
    }
    const total = results.total || 0;
    for (const [option, count] of Object.entries(results.counts)) {
      const bar = document.getElementById("bar-" + option);
      const label = document.getElementById("count-" + option);
      if (!bar || !label) continue;
      bar.style.width = (total ? (100 * count) / total : 0).toFixed(1) + "%";
      label.textContent = String(count);
    }
    document.getElementById("total").textContent = String(total);
    status.textContent = results.stale ? "stale: the store is down" : "live";
  }

  // Draw once from the JSON API so the page is right even before the stream opens.
  fetch(chart.dataset.api, { headers: { Accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : null))
    .then((results) => results && draw(results))
    .catch(() => {});

  const stream = new EventSource(chart.dataset.stream);
  stream.addEventListener("results", (event) => draw(JSON.parse(event.data)));
  stream.onerror = () => { status.textContent = "reconnecting…"; };
})();
