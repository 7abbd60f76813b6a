-- Logs our witness cosigns besides our neighbours': any log a coordinator (or the settings) names by origin and log
-- key, so that a log no one here wrote can get its checkpoints cosigned.
CREATE TABLE federation.witnessed_logs (
    origin text PRIMARY KEY,
    key text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now()
);
