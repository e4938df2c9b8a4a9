-- The pipeline's schema (README "Watching in PostgreSQL"). Every table a person may want to watch with psql.

CREATE TABLE training_requests (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('training', 'evaluation')),
    params        jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    stage         text NOT NULL DEFAULT 'queued',   -- queued | fetching | training | evaluating | done
    progress      text,                             -- 'fetching 12/50', 'training 2/5'
    error         text,
    dataset_id    bigint,
    model_id      bigint,
    evaluation_id bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX training_requests_created_idx ON training_requests (created_at DESC);

-- Content-addressed images, shared by every dataset that contains them.
CREATE TABLE images (
    sha256      text PRIMARY KEY CHECK (length(sha256) = 64),
    bytes       bytea NOT NULL,
    byte_size   integer NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    format      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The link without its query string identifies an image at the source: an overlapping
-- range downloads only what is not stored yet.
CREATE TABLE image_sources (
    source_key  text PRIMARY KEY,
    sha256      text NOT NULL REFERENCES images (sha256),
    seen_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE datasets (
    id             bigserial PRIMARY KEY,
    start_date     date NOT NULL,
    end_date       date NOT NULL,
    tags           text[] NOT NULL,
    digest         text NOT NULL,          -- sha256 over the sorted (sha256, tag) list
    test_fraction  double precision NOT NULL,
    val_fraction   double precision NOT NULL,
    seed           bigint NOT NULL,
    n_images       integer NOT NULL,
    counts         jsonb NOT NULL,         -- {"vine": 16, "grass": 5, "ground": 13}
    split_counts   jsonb NOT NULL DEFAULT '{}',
    skipped        integer NOT NULL DEFAULT 0,   -- listing entries without a link
    rejected       jsonb NOT NULL DEFAULT '{}',  -- {"truncated": 2, "not an image": 1}
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (digest, test_fraction, val_fraction, seed)
);

CREATE TABLE dataset_images (
    dataset_id  bigint NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    sha256      text NOT NULL REFERENCES images (sha256),
    tag         text NOT NULL,
    source_url  text NOT NULL,             -- without its (expiring) query string
    taken_at    timestamptz,
    split       text NOT NULL CHECK (split IN ('train', 'val', 'test')),
    PRIMARY KEY (dataset_id, sha256)
);
CREATE INDEX dataset_images_split_idx ON dataset_images (dataset_id, split);

CREATE TABLE models (
    id                 bigserial PRIMARY KEY,
    request_id         uuid NOT NULL UNIQUE REFERENCES training_requests (id),
    dataset_id         bigint NOT NULL REFERENCES datasets (id),
    architecture       text NOT NULL,
    hyperparams        jsonb NOT NULL,
    class_names        text[] NOT NULL,
    input_shape        integer[] NOT NULL,
    status             text NOT NULL DEFAULT 'training'
                       CHECK (status IN ('training', 'trained', 'failed', 'corrupt')),
    weights_sha256     text,
    weights_bytes      bigint,
    library_versions   jsonb NOT NULL DEFAULT '{}',
    train_seconds      double precision,
    images_per_second  double precision,
    best_epoch         integer,
    final_metrics      jsonb NOT NULL DEFAULT '{}',
    checkpoint_epoch   integer,             -- last epoch whose checkpoint is stored
    created_at         timestamptz NOT NULL DEFAULT now(),
    trained_at         timestamptz
);

-- Final weights in parts of a few MiB, written in one transaction with models.status = 'trained'.
CREATE TABLE model_weights (
    model_id  bigint NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    part      integer NOT NULL,
    bytes     bytea NOT NULL,
    PRIMARY KEY (model_id, part)
);

-- Per-epoch checkpoint (weights + optimizer state), replaced at each epoch end.
CREATE TABLE model_checkpoints (
    model_id  bigint NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    part      integer NOT NULL,
    bytes     bytea NOT NULL,
    PRIMARY KEY (model_id, part)
);

CREATE TABLE training_epochs (
    model_id        bigint NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    epoch           integer NOT NULL,       -- 1-based
    loss            double precision,
    accuracy        double precision,
    val_loss        double precision,
    val_accuracy    double precision,
    learning_rate   double precision,
    seconds         double precision,
    metrics         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, epoch)
);

CREATE TABLE evaluations (
    id                 bigserial PRIMARY KEY,
    model_id           bigint NOT NULL REFERENCES models (id),
    dataset_id         bigint NOT NULL REFERENCES datasets (id),
    split              text NOT NULL,
    request_id         uuid REFERENCES training_requests (id),
    accuracy           double precision,
    loss               double precision,
    macro_f1           double precision,
    balanced_accuracy  double precision,
    per_class          jsonb NOT NULL,      -- {"vine": {"precision":..,"recall":..,"f1":..,"support":..}}
    confusion_matrix   jsonb NOT NULL,      -- rows = truth, columns = prediction, in class_names order
    class_names        text[] NOT NULL,
    n_images           integer NOT NULL,
    images_per_second  double precision,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, dataset_id, split)
);

CREATE TABLE predictions (
    evaluation_id  bigint NOT NULL REFERENCES evaluations (id) ON DELETE CASCADE,
    sha256         text NOT NULL REFERENCES images (sha256),
    true_label     text NOT NULL,
    predicted      text NOT NULL,
    probabilities  jsonb NOT NULL,          -- {"vine": 0.7, "ground": 0.2, "grass": 0.1}
    PRIMARY KEY (evaluation_id, sha256)
);

-- The champion per class set (e.g. 'grass,ground,vine') and the history of promotions.
CREATE TABLE champions (
    class_set      text PRIMARY KEY,
    model_id       bigint NOT NULL REFERENCES models (id),
    evaluation_id  bigint NOT NULL REFERENCES evaluations (id),
    macro_f1       double precision NOT NULL,
    promoted_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE champion_history (
    id                 bigserial PRIMARY KEY,
    class_set          text NOT NULL,
    model_id           bigint NOT NULL REFERENCES models (id),
    previous_model_id  bigint REFERENCES models (id),
    evaluation_id      bigint NOT NULL REFERENCES evaluations (id),
    macro_f1           double precision NOT NULL,
    previous_macro_f1  double precision,
    promoted_at        timestamptz NOT NULL DEFAULT now()
);

-- Messages that could not be handled (including bodies without a usable request id).
CREATE TABLE failures (
    id          bigserial PRIMARY KEY,
    request_id  uuid,
    queue       text NOT NULL,
    stage       text NOT NULL,
    error       text NOT NULL,
    body        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- NOTIFY for watchers (chouette watch, chouette train --wait): payload is a small JSON object.
CREATE FUNCTION notify_request() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chouette_requests', json_build_object(
        'request_id', NEW.id, 'status', NEW.status, 'stage', NEW.stage,
        'progress', NEW.progress, 'error', left(NEW.error, 500))::text);
    RETURN NEW;
END $$;
CREATE TRIGGER training_requests_notify AFTER INSERT OR UPDATE ON training_requests
    FOR EACH ROW EXECUTE FUNCTION notify_request();

CREATE FUNCTION notify_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chouette_epochs', json_build_object(
        'model_id', NEW.model_id, 'epoch', NEW.epoch, 'loss', NEW.loss,
        'accuracy', NEW.accuracy, 'val_loss', NEW.val_loss,
        'val_accuracy', NEW.val_accuracy)::text);
    RETURN NEW;
END $$;
CREATE TRIGGER training_epochs_notify AFTER INSERT OR UPDATE ON training_epochs
    FOR EACH ROW EXECUTE FUNCTION notify_epoch();

CREATE FUNCTION notify_evaluation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chouette_evaluations', json_build_object(
        'evaluation_id', NEW.id, 'model_id', NEW.model_id, 'request_id', NEW.request_id,
        'accuracy', NEW.accuracy, 'macro_f1', NEW.macro_f1)::text);
    RETURN NEW;
END $$;
CREATE TRIGGER evaluations_notify AFTER INSERT ON evaluations
    FOR EACH ROW EXECUTE FUNCTION notify_evaluation();

-- Views to watch with psql.
CREATE VIEW request_progress AS
SELECT r.id AS request_id, r.kind, r.status, r.stage, r.progress, r.error,
       r.params -> 'training' ->> 'architecture' AS architecture,
       r.dataset_id, r.model_id, r.evaluation_id,
       r.created_at, r.updated_at,
       round(extract(epoch FROM coalesce(r.finished_at, now()) - r.created_at)::numeric, 1)
           AS seconds
FROM training_requests r
ORDER BY r.created_at DESC;

CREATE VIEW leaderboard AS
SELECT m.id AS model_id, m.architecture, m.dataset_id AS train_dataset_id,
       e.dataset_id AS eval_dataset_id, e.split,
       round(e.macro_f1::numeric, 4) AS macro_f1,
       round(e.accuracy::numeric, 4) AS accuracy,
       round(e.balanced_accuracy::numeric, 4) AS balanced_accuracy,
       e.n_images,
       (c.model_id IS NOT NULL) AS champion,
       m.hyperparams ->> 'image_size' AS image_size,
       m.hyperparams ->> 'epochs' AS epochs,
       m.trained_at, e.created_at AS evaluated_at
FROM evaluations e
JOIN models m ON m.id = e.model_id
LEFT JOIN champions c ON c.model_id = m.id
ORDER BY e.macro_f1 DESC NULLS LAST, e.accuracy DESC NULLS LAST, e.created_at;
