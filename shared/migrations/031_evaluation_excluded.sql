-- Evaluations on another date range leave out the images of the model's own dataset
-- (train, val and test splits alike: those of its training range), so a later-range
-- figure never scores a photo the model was trained on. n_excluded says how many images
-- of the evaluated dataset were left out that way; 0 for the model's own test split.
-- NULL: evaluated before this rule, and some of its predictions are images of the model's
-- own dataset (its figure includes them; 043_later_range_views.sql does not use it as a
-- later range).
ALTER TABLE evaluations ADD COLUMN n_excluded integer CHECK (n_excluded >= 0);
COMMENT ON COLUMN evaluations.n_excluded IS
    'images of the evaluated dataset left out because they are in the model''s own dataset';

-- Earlier evaluations that scored no image of the model's dataset are as honest as new ones.
UPDATE evaluations e SET n_excluded = 0
FROM models m
WHERE m.id = e.model_id
  AND ((e.dataset_id = m.dataset_id AND e.split = 'test')
       OR NOT EXISTS (SELECT 1 FROM predictions p
                      JOIN dataset_images own
                        ON own.dataset_id = m.dataset_id AND own.sha256 = p.sha256
                      WHERE p.evaluation_id = e.id));
