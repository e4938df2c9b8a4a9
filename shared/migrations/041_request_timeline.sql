-- Every change of a request's status, stage or ids, timestamped: how long each stage took
-- (the overhead benchmark reads it; so can anyone with psql).

CREATE TABLE request_events (
    id             bigserial PRIMARY KEY,
    request_id     uuid NOT NULL REFERENCES training_requests (id) ON DELETE CASCADE,
    status         text NOT NULL,
    stage          text NOT NULL,
    progress       text,
    dataset_id     bigint,
    model_id       bigint,
    evaluation_id  bigint,
    at             timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX request_events_request_idx ON request_events (request_id, at);

-- Progress-only updates (fetching 12/50) are not recorded: they are many and say little.
CREATE FUNCTION record_request_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.status IS DISTINCT FROM OLD.status
       OR NEW.stage IS DISTINCT FROM OLD.stage
       OR NEW.dataset_id IS DISTINCT FROM OLD.dataset_id
       OR NEW.model_id IS DISTINCT FROM OLD.model_id
       OR NEW.evaluation_id IS DISTINCT FROM OLD.evaluation_id THEN
        INSERT INTO request_events
            (request_id, status, stage, progress, dataset_id, model_id, evaluation_id)
        VALUES (NEW.id, NEW.status, NEW.stage, NEW.progress,
                NEW.dataset_id, NEW.model_id, NEW.evaluation_id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER training_requests_timeline AFTER INSERT OR UPDATE ON training_requests
    FOR EACH ROW EXECUTE FUNCTION record_request_event();

-- One row per recorded change, with the seconds until the next one
-- (NULL for the latest: the request is still there, or it ended).
CREATE VIEW request_timeline AS
SELECT request_id, status, stage, progress, dataset_id, model_id, evaluation_id,
       at AS entered_at,
       round(extract(epoch FROM (lead(at) OVER w - at))::numeric, 3) AS seconds
FROM request_events
WINDOW w AS (PARTITION BY request_id ORDER BY at, id)
ORDER BY request_id, at, id;
