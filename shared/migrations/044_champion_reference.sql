-- Champion on comparable evaluations: a pinned reference date range, manual promotions,
-- and a notification whenever a champion changes (the API reloads the model it serves).

-- The reference range (`chouette champion --reference START END`): one row, or none.
-- While one is pinned, champions are chosen on evaluations of that date range only.
CREATE TABLE champion_reference (
    only_one    boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    start_date  date NOT NULL,
    end_date    date NOT NULL CHECK (end_date >= start_date),
    pinned_at   timestamptz NOT NULL DEFAULT now()
);

-- Why a model is champion: 'evaluation' (the evaluator's rule on a shared dataset),
-- 'reference' (best on the pinned reference range), 'promoted' (`chouette promote`;
-- automatic decisions leave it in place). A promoted model may have no evaluation.
ALTER TABLE champions ADD COLUMN reason text NOT NULL DEFAULT 'evaluation'
    CHECK (reason IN ('evaluation', 'reference', 'promoted'));
ALTER TABLE champions ALTER COLUMN evaluation_id DROP NOT NULL;
ALTER TABLE champions ALTER COLUMN macro_f1 DROP NOT NULL;
ALTER TABLE champion_history ADD COLUMN reason text NOT NULL DEFAULT 'evaluation'
    CHECK (reason IN ('evaluation', 'reference', 'promoted'));
ALTER TABLE champion_history ALTER COLUMN evaluation_id DROP NOT NULL;
ALTER TABLE champion_history ALTER COLUMN macro_f1 DROP NOT NULL;

CREATE FUNCTION notify_champion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('chouette_champions', json_build_object(
            'class_set', OLD.class_set, 'model_id', NULL)::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('chouette_champions', json_build_object(
        'class_set', NEW.class_set, 'model_id', NEW.model_id, 'reason', NEW.reason)::text);
    RETURN NEW;
END $$;
CREATE TRIGGER champions_notify AFTER INSERT OR UPDATE OR DELETE ON champions
    FOR EACH ROW EXECUTE FUNCTION notify_champion();

-- champion_board (030) with the reason, and promoted champions without an evaluation.
DROP VIEW champion_board;
CREATE VIEW champion_board AS
SELECT c.class_set, c.model_id, m.architecture,
       round(c.macro_f1::numeric, 4) AS macro_f1,
       e.dataset_id AS eval_dataset_id, e.split,
       (SELECT count(*) FROM champion_history h WHERE h.class_set = c.class_set) AS promotions,
       c.promoted_at,
       c.reason, d.start_date AS eval_start_date, d.end_date AS eval_end_date
FROM champions c
JOIN models m ON m.id = c.model_id
LEFT JOIN evaluations e ON e.id = c.evaluation_id
LEFT JOIN datasets d ON d.id = e.dataset_id
ORDER BY c.class_set;
