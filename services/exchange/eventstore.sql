-- The exchange's event store: one ordered stream per aggregate, optimistic concurrency per stream.

-- name: load
SELECT version, data FROM exchange.events WHERE stream = $1 ORDER BY version

-- name: load_with_keys
-- Streams with the data key of the subject named like each, in one round trip.
SELECT s.stream, e.version, e.data, k.key
FROM unnest($1::text[]) AS s (stream)
LEFT JOIN exchange.events e ON e.stream = s.stream
LEFT JOIN exchange.subject_keys k ON k.subject = s.stream
ORDER BY s.stream, e.version

-- name: append
INSERT INTO exchange.events (stream, version, type, data, at)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bytea[], $5::timestamptz[])

-- name: all_events
SELECT seq, stream, data FROM exchange.events WHERE seq > $1 ORDER BY seq LIMIT $2

-- name: moved
-- Whether another writer got somewhere first: a stream $1 is no longer at the version $2 it was read at, or a
-- subject $3 that had no data key has one now.
SELECT EXISTS (
    SELECT 1 FROM unnest($1::text[], $2::int[]) AS s (stream, version)
    WHERE s.version <> (SELECT coalesce(max(e.version), 0) FROM exchange.events e WHERE e.stream = s.stream)
) OR EXISTS (SELECT 1 FROM exchange.subject_keys WHERE subject = ANY($3::text[]))
