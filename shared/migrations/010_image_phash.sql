-- Grouped splits (the fetcher): near-duplicate photos and capture sessions stay on one side
-- of train/val/test.

-- 64-bit perceptual hash (dHash of the 9x8 grayscale image) as a signed bigint; NULL for
-- images stored before this column existed (the fetcher fills it in when a dataset uses one).
ALTER TABLE images ADD COLUMN phash bigint;

-- Groups of photos that look alike (sessions, near duplicates) the split kept together;
-- NULL for datasets split before grouping.
ALTER TABLE datasets ADD COLUMN n_groups integer;
