-- The trainer's work after the last epoch: BatchNorm statistics re-estimated over the
-- training split, then the final model validated in inference mode. Computation, like
-- train_seconds (the epochs); the overhead benchmark counts both as training.
ALTER TABLE models ADD COLUMN finish_seconds double precision;
COMMENT ON COLUMN models.finish_seconds IS
    'seconds spent after the last epoch: BatchNorm re-estimation and the final validation';
