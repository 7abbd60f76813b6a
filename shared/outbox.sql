-- The durable outbox's statements (shared/outbox.py). {table} stands for the owner's schema-qualified outbox table
-- (e.g. exchange.outbox), put in once when the outbox is built; it is checked to be a plain identifier first.
-- The table: key text PRIMARY KEY, kind text, payload bytea, created_at, attempts int, next_attempt_at,
-- done_at, outcome bytea, last_error text (see services/exchange/migrations/0002_outbox.sql).

-- name: enqueue
INSERT INTO {table} (key, kind, payload) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING

-- name: enqueue_many
INSERT INTO {table} (key, kind, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) ON CONFLICT (key) DO NOTHING

-- name: claim
-- Up to $1 due rows, locked until the round's transaction ends (rows another round holds are skipped), with the
-- backlog as it stood: how many rows are pending, due or not, and the age in seconds of the oldest. One row with a
-- null key when nothing is due.
WITH claimed AS (
    SELECT key, payload, attempts, next_attempt_at FROM {table}
    WHERE done_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
SELECT s.pending, s.oldest_age, c.key, c.payload, c.attempts
FROM (
    SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age
    FROM {table} WHERE done_at IS NULL
) s
LEFT JOIN claimed c ON true
ORDER BY c.next_attempt_at

-- name: done
UPDATE {table} SET done_at = clock_timestamp(), outcome = $2, attempts = attempts + 1 WHERE key = $1

-- name: done_many
UPDATE {table} AS o SET done_at = clock_timestamp(), outcome = f.outcome, attempts = o.attempts + 1
FROM unnest($1::text[], $2::bytea[]) AS f (key, outcome)
WHERE o.key = f.key

-- name: retry
UPDATE {table} AS o
SET attempts = o.attempts + 1,
    last_error = f.error,
    next_attempt_at = clock_timestamp() + make_interval(secs => f.delay)
FROM unnest($1::text[], $2::text[], $3::float8[]) AS f (key, error, delay)
WHERE o.key = f.key

-- name: entry
SELECT key, kind, payload, created_at, attempts, next_attempt_at, done_at, outcome, last_error
FROM {table} WHERE key = $1
