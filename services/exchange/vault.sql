-- The vault's per-subject data keys.

-- name: key
SELECT key FROM exchange.subject_keys WHERE subject = $1

-- name: insert_keys
INSERT INTO exchange.subject_keys (subject, key) SELECT * FROM unnest($1::text[], $2::bytea[])

-- name: shred
DELETE FROM exchange.subject_keys WHERE subject = ANY($1::text[])
