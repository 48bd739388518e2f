// Live results: the page arrives with the counts already in it; the server then pushes
// changes over server-sent events and the page redraws the bars in place.
(function () {
  "use strict";
  const chart = document.getElementById("chart");
  const status = document.getElementById("status");

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

  // The browser reconnects by itself after a dropped stream (the server's `retry:`). It
  // gives up for good when the server refuses one (503 at its stream limit, or during a
  // rollout); then we open a new one ourselves, waiting longer each time, with jitter, so
  // a full room does not hammer a full server. The bars keep the last counts meanwhile.
  const BACKOFF_MS = { first: 2000, max: 60000 };
  let backoff = BACKOFF_MS.first;

  function connect() {
    const stream = new EventSource(chart.dataset.stream);
    stream.addEventListener("results", (event) => {
      backoff = BACKOFF_MS.first;
      draw(JSON.parse(event.data), true);
    });
    stream.onerror = () => {
      if (stream.readyState !== EventSource.CLOSED) {
        status.textContent = "reconnecting…";
        return;
      }
      stream.close();
      const delay = backoff / 2 + Math.random() * (backoff / 2);
      backoff = Math.min(backoff * 2, BACKOFF_MS.max);
      status.textContent = "server busy, retrying in " + Math.round(delay / 1000) + " s";
      setTimeout(connect, delay);
    };
  }
  connect();
})();
