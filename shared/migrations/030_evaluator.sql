-- Evaluator: the champion key, lookups by shared evaluation dataset, and views to watch.

-- The champion key of a model or evaluation: its class names sorted, comma-joined
-- ('grass,ground,vine'); services/evaluator/store.py computes the same in Python.
CREATE FUNCTION class_set(names text[]) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT string_agg(n, ',' ORDER BY n) FROM unnest(names) AS n $$;

-- Champion decisions compare the evaluations of one (dataset, split).
CREATE INDEX evaluations_dataset_split_idx ON evaluations (dataset_id, split, macro_f1 DESC);

-- Same columns as in 001 (champion now means: champion of the model's own class set),
-- plus the class set, the rank among the models scored on the same dataset and split
-- (the only fair comparison), and the loss and speed of the evaluation.
CREATE OR REPLACE VIEW leaderboard AS
SELECT m.id AS model_id, m.architecture, m.dataset_id AS train_dataset_id,
       e.dataset_id AS eval_dataset_id, e.split,
       round(e.macro_f1::numeric, 4) AS macro_f1,
       round(e.accuracy::numeric, 4) AS accuracy,
       round(e.balanced_accuracy::numeric, 4) AS balanced_accuracy,
       e.n_images,
       (c.model_id IS NOT NULL) AS champion,
       m.hyperparams ->> 'image_size' AS image_size,
       m.hyperparams ->> 'epochs' AS epochs,
       m.trained_at, e.created_at AS evaluated_at,
       e.id AS evaluation_id,
       class_set(e.class_names) AS class_set,
       rank() OVER (PARTITION BY e.dataset_id, e.split, class_set(e.class_names)
                    ORDER BY e.macro_f1 DESC NULLS LAST) AS rank_on_dataset,
       round(e.loss::numeric, 4) AS loss,
       round(e.images_per_second::numeric, 1) AS images_per_second
FROM evaluations e
JOIN models m ON m.id = e.model_id
LEFT JOIN champions c ON c.model_id = m.id AND c.class_set = class_set(m.class_names)
ORDER BY e.macro_f1 DESC NULLS LAST, e.accuracy DESC NULLS LAST, e.created_at;

-- The current champion of each class set and the evaluation that made it champion.
CREATE VIEW champion_board AS
SELECT c.class_set, c.model_id, m.architecture,
       round(c.macro_f1::numeric, 4) AS macro_f1,
       e.dataset_id AS eval_dataset_id, e.split,
       (SELECT count(*) FROM champion_history h WHERE h.class_set = c.class_set) AS promotions,
       c.promoted_at
FROM champions c
JOIN models m ON m.id = c.model_id
JOIN evaluations e ON e.id = c.evaluation_id
ORDER BY c.class_set;
