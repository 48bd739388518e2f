-- One row per voter and poll: the latest vote wins by version, never by arrival order.
CREATE TABLE votes (
    poll_id    text        NOT NULL,
    voter_id   text        NOT NULL,
    option_id  text        NOT NULL,
    version    bigint      NOT NULL,
    trace_id   text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, voter_id)
);

-- Counts kept in step with `votes`, so reading results never scans the votes table.
CREATE TABLE tallies (
    poll_id   text   NOT NULL,
    option_id text   NOT NULL,
    count     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (poll_id, option_id)
);

-- Statement-level triggers with transition tables see the rows exactly as the upsert
-- changed them, after row locks were taken. Two workers racing on one voter therefore
-- can never both subtract the same old vote. One statement updates each tally row once.
CREATE FUNCTION tally_inserted_votes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tallies (poll_id, option_id, count)
    SELECT poll_id, option_id, count(*) FROM inserted_votes
    GROUP BY poll_id, option_id
    ORDER BY poll_id, option_id
    ON CONFLICT (poll_id, option_id) DO UPDATE SET count = tallies.count + EXCLUDED.count;
    RETURN NULL;
END
$$;

CREATE FUNCTION tally_updated_votes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tallies (poll_id, option_id, count)
    SELECT poll_id, option_id, sum(delta) FROM (
        SELECT poll_id, option_id, 1 AS delta FROM new_votes
        UNION ALL
        SELECT poll_id, option_id, -1 AS delta FROM old_votes
    ) AS changes
    GROUP BY poll_id, option_id
    HAVING sum(delta) <> 0
    ORDER BY poll_id, option_id
    ON CONFLICT (poll_id, option_id) DO UPDATE SET count = tallies.count + EXCLUDED.count;
    RETURN NULL;
END
$$;

CREATE TRIGGER votes_tally_insert AFTER INSERT ON votes
    REFERENCING NEW TABLE AS inserted_votes
    FOR EACH STATEMENT EXECUTE FUNCTION tally_inserted_votes();

CREATE TRIGGER votes_tally_update AFTER UPDATE ON votes
    REFERENCING OLD TABLE AS old_votes NEW TABLE AS new_votes
    FOR EACH STATEMENT EXECUTE FUNCTION tally_updated_votes();
