-- What the results page's pipeline panel shows. The result service may reach PostgreSQL
-- only, so the workers write here what they measure of the queue: with every batch, in its
-- transaction, and once a second while idle. One row per worker (its pod name).
CREATE TABLE worker_reports (
    worker            text        PRIMARY KEY,
    reported_at       timestamptz NOT NULL DEFAULT now(),
    queue_depth       bigint,               -- NULL: the queue did not answer the worker
    oldest_waiting_at timestamptz,          -- NULL: nothing waits
    last_batch_at     timestamptz,
    last_batch_size   integer     NOT NULL DEFAULT 0
);

-- The vote replicas whose votes were applied lately: each vote carries the name of the
-- replica that accepted it, so the page can show load balancing at work.
CREATE TABLE vote_replicas (
    replica      text        PRIMARY KEY,
    last_vote_at timestamptz NOT NULL
);
