"""A reference peer for the ingest benchmark: a vote service shaped like example-voting-app's.

Why it exists: docs/performance.md compares cloudvote's ingest with Docker's
example-voting-app, and a figure quoted from elsewhere cannot be rerun. This peer puts the
comparison in the repo: bench/ingest.py drives it and cloudvote's vote service with the same
wrk load, taking turns, on the same machine in one run.

What it is faithful to, from example-voting-app's public description of its vote service
(written here in our own words; none of its code is copied):

- Flask under gunicorn with 4 sync workers and `--keep-alive 0`, so every request is served
  by a blocking worker on a fresh connection;
- `GET /` renders a two-option ballot page;
- `POST /` with form `vote=a|b` reads the `voter_id` cookie (a random hex id when there is
  none), does one `RPUSH` of `{"voter_id": ..., "vote": ...}` as JSON to the Redis list
  `votes`, and renders the ballot again with 200 and the cookie set;
- its Redis keeps no append-only file, so an acknowledged vote is in memory only.

It also pays what upstream pays: a new Redis connection per vote (upstream's client lives
on Flask's per-request `g`) and an access log line per request (upstream logs each one to
stdout). One difference flatters the peer: its Redis keeps no append-only file, where every
cloudvote vote waits for an fsync.

It is a benchmark fixture, never a product: it lives only under bench/, which neither the
wheel (`src/cloudvote` only) nor the container build context (.dockerignore) includes.
"""
