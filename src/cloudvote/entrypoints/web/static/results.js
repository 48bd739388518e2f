// Live results: the page arrives with the counts already in it; the server then pushes
// changes over server-sent events and the page redraws the bars in place.
(function () {
  "use strict";
  const chart = document.getElementById("chart");
  const status = document.getElementById("status");
  const announce = document.getElementById("announce");

  // Screen readers hear the new counts, but at most this often: a busy poll changes
  // several times a second, and a reader that speaks every change says nothing useful.
  const ANNOUNCE_EVERY_MS = 5000;
  let lastAnnounced = 0;
  let pendingAnnouncement = null;

  function say(text) {
    const now = Date.now();
    if (now - lastAnnounced >= ANNOUNCE_EVERY_MS) {
      lastAnnounced = now;
      announce.textContent = text;
      return;
    }
    if (pendingAnnouncement === null) {
      pendingAnnouncement = setTimeout(() => {
        pendingAnnouncement = null;
        say(announce.dataset.next);
      }, ANNOUNCE_EVERY_MS - (now - lastAnnounced));
    }
    announce.dataset.next = text;
  }

  // `live` is true only for stream events: the page must not claim to be live while the
  // stream has not delivered anything (a buffering proxy would hold it back for ever).
  function draw(results, live) {
    if (results.unavailable) {
      status.textContent = "results store unavailable, retrying";
      return;
    }
    const total = results.total || 0;
    const spoken = [];
    for (const [option, count] of Object.entries(results.counts)) {
      const bar = document.getElementById("bar-" + option);
      const label = document.getElementById("count-" + option);
      const share = document.getElementById("share-" + option);
      if (!bar || !label) continue;
      const percent = total ? (100 * count) / total : 0;
      bar.style.width = percent.toFixed(1) + "%";
      label.textContent = String(count);
      if (share) share.textContent = percent.toFixed(0) + "%";
      const name = document.getElementById("label-" + option);
      spoken.push((name ? name.textContent : option) + " " + count + " (" + percent.toFixed(0) + "%)");
    }
    document.getElementById("total").textContent = String(total);
    if (results.stale) {
      status.textContent = "stale: the store is down";
    } else if (live) {
      status.textContent = "live";
    }
    if (live) say(spoken.join(", ") + "; " + total + " votes");
  }

  // -- the pipeline panel ----------------------------------------------------------------
  // The server sends a new state only when something changes; ages ("3 s ago") grow here,
  // from the store's clock at `as_of` plus the time since the state arrived, so a browser
  // whose clock is off still shows the right ages.
  const panel = document.getElementById("pipeline");
  let pipeline = null;
  let receivedAt = 0;

  function field(id, text) {
    const element = document.getElementById(id);
    if (element && element.textContent !== text) element.textContent = text;
  }

  // Text followed by names, each in <code> as the server renders them.
  function fieldWithNames(id, text, names, separator = ": ") {
    const element = document.getElementById(id);
    const whole = text + (names.length ? separator + names.join(", ") : "");
    if (!element || element.textContent === whole) return;
    element.textContent = text + (names.length ? separator : "");
    names.forEach((name, index) => {
      if (index) element.append(", ");
      const code = document.createElement("code");
      code.textContent = name;
      element.append(code);
    });
  }

  function seconds(value, digits) {
    return Math.max(0, value).toFixed(digits) + " s";
  }

  // The same rules as the server's first render (domain/pipeline.py, results.html).
  function drawPipeline() {
    if (!pipeline) return;
    const now = pipeline.as_of + (performance.now() - receivedAt) / 1000;
    const reachable = pipeline.store_reachable;
    const heard = pipeline.last_report_at !== null;
    const silentFor = heard ? now - pipeline.last_report_at : null;
    // The server sends a new state when a worker falls silent or comes back, so its list
    // is the truth; last_report_at only dates the silence.
    const reporting = pipeline.workers_reporting.length > 0;
    if (!reachable || !heard) {
      field("pipe-queue", "unknown");
    } else if (pipeline.queue_depth === null) {
      field("pipe-queue", "unknown: the worker cannot reach the queue");
    } else if (reporting) {
      field("pipe-queue", pipeline.queue_depth + " waiting");
    } else {
      field("pipe-queue", pipeline.queue_depth + " waiting when last measured, " + seconds(silentFor, 0) + " ago");
    }
    if (!reachable || !heard || pipeline.queue_depth === null) {
      field("pipe-lag", "unknown");
    } else if (pipeline.oldest_waiting_at !== null) {
      field("pipe-lag", seconds(now - pipeline.oldest_waiting_at, 1));
    } else if (reporting) {
      field("pipe-lag", "none");
    } else {
      field("pipe-lag", "up to " + seconds(silentFor, 0));
    }
    const batch = pipeline.last_batch;
    if (!reachable) {
      field("pipe-batch", "unknown");
    } else if (batch) {
      const what = batch.size + (batch.size === 1 ? " vote, " : " votes, ") + seconds(now - batch.at, 0) + " ago, by";
      fieldWithNames("pipe-batch", what, [batch.worker], " ");
    } else {
      field("pipe-batch", "none yet");
    }
    if (!reachable) {
      field("pipe-workers", "unknown");
    } else if (reporting) {
      fieldWithNames("pipe-workers", pipeline.workers_reporting.length + " reporting", pipeline.workers_reporting);
    } else if (heard) {
      field("pipe-workers", "silent for " + seconds(silentFor, 0) + ": votes wait in the queue, none are lost");
    } else {
      field("pipe-workers", "none has reported yet");
    }
    field("pipe-store", reachable ? "reachable" : "unreachable: counts are the last seen");
    if (!reachable) {
      field("pipe-replicas", "unknown");
    } else {
      const replicas = pipeline.vote_replicas;
      fieldWithNames("pipe-replicas", replicas.length + " took votes in the last minute", replicas);
    }
    panel.classList.toggle("alarm", !reporting || !reachable);
  }

  function receivePipeline(state) {
    pipeline = state;
    receivedAt = performance.now();
    drawPipeline();
  }

  if (panel) {
    receivePipeline(JSON.parse(panel.dataset.initial));
    setInterval(drawPipeline, 1000);
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
    stream.addEventListener("pipeline", (event) => {
      if (panel) receivePipeline(JSON.parse(event.data));
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
