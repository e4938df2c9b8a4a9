-- Trainer: who is training a model right now. A redelivered request (consumer timeout,
-- a crashed or stopped trainer) must not be trained twice at once: the lease holder renews
-- it while it trains; another trainer waits until the model is trained or the lease lapses.
ALTER TABLE models ADD COLUMN lease_owner text;
ALTER TABLE models ADD COLUMN lease_until timestamptz;
