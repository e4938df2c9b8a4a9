-- Retention (`chouette prune`): when a model's weights were removed. Such a model stays in
-- the registry with its metrics and evaluations; loading it says its weights were pruned.
ALTER TABLE models ADD COLUMN weights_pruned_at timestamptz;
