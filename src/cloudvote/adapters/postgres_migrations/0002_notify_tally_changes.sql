-- Every commit that changes a poll's tallies tells the listening result services which
-- poll changed, so they re-read it once instead of every viewer polling the table.
-- pg_notify inside the trigger is transactional: the notification is sent at commit and
-- dropped on rollback, and PostgreSQL folds identical notifications of one transaction
-- into one. The payload is only the poll id; listeners read the counts themselves.
CREATE FUNCTION notify_tally_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cloudvote_tallies', poll_id)
    FROM (SELECT DISTINCT poll_id FROM changed_tallies) AS polls;
    RETURN NULL;
END
$$;

CREATE TRIGGER tallies_notify_insert AFTER INSERT ON tallies
    REFERENCING NEW TABLE AS changed_tallies
    FOR EACH STATEMENT EXECUTE FUNCTION notify_tally_change();

CREATE TRIGGER tallies_notify_update AFTER UPDATE ON tallies
    REFERENCING NEW TABLE AS changed_tallies
    FOR EACH STATEMENT EXECUTE FUNCTION notify_tally_change();
