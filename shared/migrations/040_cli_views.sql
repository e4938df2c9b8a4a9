-- Views for the CLI (chouette models) and for people watching with psql.

-- One row per model: its training dataset, network and held-out metrics, best first.
-- The metrics are those of the evaluation on the model's own test split when there is one,
-- else of its latest evaluation; n_evaluations counts all (other date ranges included).
CREATE VIEW model_registry AS
SELECT m.id AS model_id, m.architecture, m.status,
       m.dataset_id, d.start_date, d.end_date, d.tags, d.n_images,
       (m.hyperparams ->> 'image_size')::int AS image_size,
       (m.hyperparams ->> 'epochs')::int AS epochs,
       m.best_epoch,
       round(m.train_seconds::numeric, 1) AS train_seconds,
       e.id AS evaluation_id, e.dataset_id AS eval_dataset_id, e.split AS eval_split,
       e.n_images AS eval_images,
       round(e.macro_f1::numeric, 4) AS macro_f1,
       round(e.accuracy::numeric, 4) AS accuracy,
       (SELECT count(*) FROM evaluations x WHERE x.model_id = m.id) AS n_evaluations,
       (c.model_id IS NOT NULL) AS champion,
       m.request_id, m.created_at, m.trained_at
FROM models m
JOIN datasets d ON d.id = m.dataset_id
LEFT JOIN LATERAL (
    SELECT * FROM evaluations ev
    WHERE ev.model_id = m.id
    ORDER BY (ev.dataset_id = m.dataset_id AND ev.split = 'test') DESC, ev.created_at DESC
    LIMIT 1
) e ON true
LEFT JOIN champions c ON c.model_id = m.id
ORDER BY e.macro_f1 DESC NULLS LAST, e.accuracy DESC NULLS LAST, m.id DESC;

-- Every evaluation with the per-class F1 pulled out of the JSON, newest first.
CREATE VIEW evaluation_summary AS
SELECT e.id AS evaluation_id, e.model_id, m.architecture,
       e.dataset_id, d.start_date, d.end_date, e.split, e.n_images,
       round(e.accuracy::numeric, 4) AS accuracy,
       round(e.macro_f1::numeric, 4) AS macro_f1,
       round((e.per_class -> 'vine' ->> 'f1')::numeric, 3) AS vine_f1,
       round((e.per_class -> 'ground' ->> 'f1')::numeric, 3) AS ground_f1,
       round((e.per_class -> 'grass' ->> 'f1')::numeric, 3) AS grass_f1,
       e.request_id, e.created_at
FROM evaluations e
JOIN models m ON m.id = e.model_id
JOIN datasets d ON d.id = e.dataset_id
ORDER BY e.created_at DESC;
