-- Progress as numbers for programs (bars in the CLI and the results page), next to the
-- text people read: 'fetching 12/50' is also progress_done = 12, progress_total = 50.

ALTER TABLE training_requests
    ADD COLUMN progress_done  integer CHECK (progress_done >= 0),
    ADD COLUMN progress_total integer CHECK (progress_total >= 0);

CREATE OR REPLACE FUNCTION notify_request() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chouette_requests', json_build_object(
        'request_id', NEW.id, 'status', NEW.status, 'stage', NEW.stage,
        'progress', NEW.progress, 'progress_done', NEW.progress_done,
        'progress_total', NEW.progress_total, 'error', left(NEW.error, 500))::text);
    RETURN NEW;
END $$;

CREATE OR REPLACE VIEW request_progress AS
SELECT r.id AS request_id, r.kind, r.status, r.stage, r.progress, r.error,
       r.params -> 'training' ->> 'architecture' AS architecture,
       r.dataset_id, r.model_id, r.evaluation_id,
       r.created_at, r.updated_at,
       round(extract(epoch FROM coalesce(r.finished_at, now()) - r.created_at)::numeric, 1)
           AS seconds,
       r.progress_done, r.progress_total
FROM training_requests r
ORDER BY r.created_at DESC;
