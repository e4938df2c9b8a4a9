-- Trainer (issue 4): checkpoints keyed by epoch, so the last epoch's checkpoint (to resume)
-- and the best epoch's (to restore when training ends) can both be kept.
ALTER TABLE model_checkpoints ADD COLUMN epoch integer NOT NULL DEFAULT 0;
ALTER TABLE model_checkpoints DROP CONSTRAINT model_checkpoints_pkey;
ALTER TABLE model_checkpoints ADD PRIMARY KEY (model_id, epoch, part);

-- Weight parts are incompressible floats: store them out of line without trying pglz.
ALTER TABLE model_weights ALTER COLUMN bytes SET STORAGE EXTERNAL;
ALTER TABLE model_checkpoints ALTER COLUMN bytes SET STORAGE EXTERNAL;
