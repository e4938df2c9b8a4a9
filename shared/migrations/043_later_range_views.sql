-- The later-range figure beside the held-out one (needs evaluations.n_excluded, 031).
-- Numbered after 040, which creates these views: on a fresh database 031 runs before 040.

-- model_registry (040) with the later-range figure at the end: the most recent evaluation
-- of every image ('all') of another dataset, training images left out (the most recent,
-- not the best: picking the best of several ranges would flatter the model again), and
-- later_gap = its macro F1 minus the held-out test split's (NULL unless both exist).
CREATE OR REPLACE VIEW model_registry AS
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
       m.request_id, m.created_at, m.trained_at,
       l.id AS later_evaluation_id, l.dataset_id AS later_dataset_id,
       ld.start_date AS later_start_date, ld.end_date AS later_end_date,
       l.n_images AS later_images, l.n_excluded AS later_excluded,
       round(l.macro_f1::numeric, 4) AS later_macro_f1,
       round(l.accuracy::numeric, 4) AS later_accuracy,
       CASE WHEN e.dataset_id = m.dataset_id AND e.split = 'test'
            THEN round(l.macro_f1::numeric, 4) - round(e.macro_f1::numeric, 4)
       END AS later_gap
FROM models m
JOIN datasets d ON d.id = m.dataset_id
LEFT JOIN LATERAL (
    SELECT * FROM evaluations ev
    WHERE ev.model_id = m.id
    ORDER BY (ev.dataset_id = m.dataset_id AND ev.split = 'test') DESC, ev.created_at DESC
    LIMIT 1
) e ON true
LEFT JOIN LATERAL (
    SELECT * FROM evaluations lv
    WHERE lv.model_id = m.id AND lv.dataset_id <> m.dataset_id AND lv.split = 'all'
      AND lv.n_excluded IS NOT NULL AND lv.macro_f1 IS NOT NULL
    ORDER BY lv.created_at DESC, lv.id DESC
    LIMIT 1
) l ON true
LEFT JOIN datasets ld ON ld.id = l.dataset_id
LEFT JOIN champions c ON c.model_id = m.id
ORDER BY e.macro_f1 DESC NULLS LAST, e.accuracy DESC NULLS LAST, m.id DESC;

-- evaluation_summary (040) with n_excluded at the end.
CREATE OR REPLACE VIEW evaluation_summary AS
SELECT e.id AS evaluation_id, e.model_id, m.architecture,
       e.dataset_id, d.start_date, d.end_date, e.split, e.n_images,
       round(e.accuracy::numeric, 4) AS accuracy,
       round(e.macro_f1::numeric, 4) AS macro_f1,
       round((e.per_class -> 'vine' ->> 'f1')::numeric, 3) AS vine_f1,
       round((e.per_class -> 'ground' ->> 'f1')::numeric, 3) AS ground_f1,
       round((e.per_class -> 'grass' ->> 'f1')::numeric, 3) AS grass_f1,
       e.request_id, e.created_at,
       e.n_excluded
FROM evaluations e
JOIN models m ON m.id = e.model_id
JOIN datasets d ON d.id = e.dataset_id
ORDER BY e.created_at DESC;
