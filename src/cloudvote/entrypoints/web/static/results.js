// Live results: the server pushes tallies over server-sent events; the page redraws
// the bars in place. EventSource reconnects by itself after a network blip or a rollout.
(function () {
  "use strict";
  const chart = document.getElementById("chart");
  const status = document.getElementById("status");

  // Set by the first stream event: from then on the stream is fresher than the initial fetch.
  let streaming = false;

  // `live` is true only for stream events: the page must not claim to be live while the
  // stream has not delivered anything (a buffering proxy would hold it back for ever).
  function draw(results, live) {
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
    if (results.stale) {
      status.textContent = "stale: the store is down";
    } else if (live) {
      status.textContent = "live";
    }
  }

  // Draw once from the JSON API so the page is right even before the stream opens.
  fetch(chart.dataset.api, { headers: { Accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : null))
    .then((results) => results && !streaming && draw(results, false))
    .catch(() => {});

  const stream = new EventSource(chart.dataset.stream);
  stream.addEventListener("results", (event) => {
    streaming = true;
    draw(JSON.parse(event.data), true);
  });
  stream.onerror = () => { status.textContent = "reconnecting…"; };
})();
