-- name: ensure_replica
INSERT INTO federation.replicas (origin) VALUES ($1) ON CONFLICT (origin) DO NOTHING

-- name: replica
SELECT origin, size, edge, checkpoint, updated_at FROM federation.replicas WHERE origin = $1

-- name: replicas
SELECT origin, size, edge, checkpoint, updated_at FROM federation.replicas ORDER BY origin

-- name: lock_replica
SELECT size FROM federation.replicas WHERE origin = $1 FOR UPDATE

-- name: append_verified
-- Verified batches, all or nothing: the replica moves from $2 entries to $3 only if nobody moved it meanwhile;
-- $6/$12/$13 the entries from $2 on as pieces of bundles, $7/$8 the sizes and notes of the checkpoints they were
-- verified against, $9/$10/$11 the hash tiles they grew.
WITH moved AS (
    UPDATE federation.replicas SET size = $3, edge = $4, checkpoint = $5, updated_at = now()
    WHERE origin = $1 AND size = $2
    RETURNING origin
),
stored AS (
    -- $6 are bundles' worth of entries, the first one continuing the copy's last partial bundle if it has one.
    INSERT INTO federation.bundles AS b (origin, idx, width, data)
    SELECT moved.origin, e.idx, e.width, e.data FROM moved, unnest($12::bigint[], $13::smallint[], $6::bytea[]) AS e (idx, width, data)
    ON CONFLICT (origin, idx) DO UPDATE SET width = b.width + excluded.width, data = b.data || excluded.data
),
signed AS (
    INSERT INTO federation.checkpoints (origin, size, note)
    SELECT moved.origin, c.size, c.note FROM moved, unnest($7::bigint[], $8::bytea[]) AS c (size, note)
),
tiled AS (
    INSERT INTO federation.tiles (origin, level, idx, hashes)
    SELECT moved.origin, t.level, t.idx, t.hashes
    FROM moved, unnest($9::smallint[], $10::bigint[], $11::bytea[]) AS t (level, idx, hashes)
    ON CONFLICT (origin, level, idx) DO UPDATE SET hashes = excluded.hashes
)
SELECT count(*) FROM moved

-- name: copy_right_edge_tiles
-- The rightmost stored tile at every level of a copy, to grow its tiles from where they end.
SELECT DISTINCT ON (level) level, hashes FROM federation.tiles WHERE origin = $1 ORDER BY level, idx DESC

-- name: put_copy_tiles
-- Tiles of a copy rebuilt from its stored entries (a copy stored before tiles were kept).
INSERT INTO federation.tiles (origin, level, idx, hashes)
SELECT $1, t.level, t.idx, t.hashes FROM unnest($2::smallint[], $3::bigint[], $4::bytea[]) AS t (level, idx, hashes)
ON CONFLICT (origin, level, idx) DO UPDATE SET hashes = excluded.hashes

-- name: copy_tiles_by_coord
SELECT level, idx, hashes FROM federation.tiles
WHERE origin = $1 AND (level, idx) IN (SELECT * FROM unnest($2::smallint[], $3::bigint[]))

-- name: copy_tile
SELECT hashes FROM federation.tiles WHERE origin = $1 AND level = $2 AND idx = $3

-- name: reset_copy
-- Drop our copy of a log and our witness's record of it: both start again from nothing.
WITH tiles AS (DELETE FROM federation.tiles WHERE origin = $1),
bundles AS (DELETE FROM federation.bundles WHERE origin = $1),
checkpoints AS (DELETE FROM federation.checkpoints WHERE origin = $1),
witnessed AS (DELETE FROM federation.witnessed WHERE origin = $1)
UPDATE federation.replicas SET size = 0, edge = ''::bytea, checkpoint = NULL, updated_at = now() WHERE origin = $1

-- name: replica_bundles
-- The bundles holding entries $2 to $3 - 1 (bundle indexes $2 / 256 to ($3 - 1) / 256).
SELECT idx, data FROM federation.bundles WHERE origin = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx

-- name: count_rejection
INSERT INTO federation.rejections AS r (origin, reason, count, last_detail) VALUES ($1, $2, 1, $3)
ON CONFLICT (origin, reason) DO UPDATE SET count = r.count + 1, last_detail = $3, last_at = now()

-- name: rejections
SELECT origin, reason, count, last_detail, last_at FROM federation.rejections ORDER BY origin, reason

-- name: witnessed
SELECT size, root, note FROM federation.witnessed WHERE origin = $1

-- name: witness_advance
-- Record a cosigned checkpoint, only if the witness's record for the log is still at $2 (absent counts as 0).
INSERT INTO federation.witnessed AS w (origin, size, root, note) VALUES ($1, $3, $4, $5)
ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note,
    cosigned_at = now()
WHERE w.size = $2
RETURNING size

-- name: add_evidence
INSERT INTO federation.evidence (origin, kind, first_note, second_note, detail) VALUES ($1, $2, $3, $4, $5)

-- name: open_evidence
SELECT id, origin, kind, first_note, second_note, detail, detected_at FROM federation.evidence
WHERE resolved_at IS NULL ORDER BY id

-- name: all_evidence
SELECT id, origin, kind, first_note, second_note, detail, detected_at, resolved_at, resolution, reason
FROM federation.evidence ORDER BY id

-- name: resolve_evidence
-- A coordinator's resolution of every open piece of evidence against one log.
UPDATE federation.evidence SET resolved_at = now(), resolution = $2, reason = $3
WHERE origin = $1 AND resolved_at IS NULL
RETURNING id

-- name: has_open_evidence
SELECT EXISTS (SELECT 1 FROM federation.evidence WHERE origin = $1 AND resolved_at IS NULL)

-- name: cosigner_size
SELECT size FROM federation.cosigners WHERE witness = $1

-- name: set_cosigner_size
INSERT INTO federation.cosigners (witness, size) VALUES ($1, $2)
ON CONFLICT (witness) DO UPDATE SET size = excluded.size, cosigned_at = now()

-- name: cosigners
SELECT witness, size, cosigned_at FROM federation.cosigners ORDER BY witness

-- name: replica_checkpoint_at
SELECT note FROM federation.checkpoints WHERE origin = $1 AND size = $2

-- name: record_crossnet
-- The steps not recorded before; only those move what is in flight.
INSERT INTO federation.crossnet (transfer, kind, peer, minutes, idx)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::bigint[])
ON CONFLICT (transfer, kind) DO NOTHING
RETURNING transfer, kind, peer, minutes

-- name: open_crossnet
-- Newly sent payments are in flight, unless their answer was recorded first.
INSERT INTO federation.crossnet_open (transfer, peer, minutes)
SELECT t, p, m FROM unnest($1::text[], $2::text[], $3::integer[]) AS s (t, p, m)
WHERE NOT EXISTS (
    SELECT 1 FROM federation.crossnet d WHERE d.transfer = s.t AND d.kind IN ('accepted', 'reversed')
)
ON CONFLICT (transfer) DO NOTHING

-- name: close_crossnet
DELETE FROM federation.crossnet_open WHERE transfer = ANY($1::text[])

-- name: in_flight_out
-- Minutes of our payments to each neighbour that it has not accepted and we have not reversed.
SELECT peer, count(*) AS payments, coalesce(sum(minutes), 0)::bigint AS minutes
FROM federation.crossnet_open
GROUP BY peer

-- name: pending_decisions
SELECT payload FROM federation.outbox WHERE done_at IS NULL AND kind = 'federation.settle.decide.v1'

-- name: upsert_peer
INSERT INTO federation.peers AS p
    (origin, name, log_key, witness_key, nats_url, nats_user, nats_password, issued_password, trust_limit)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (origin) DO UPDATE SET name = excluded.name, log_key = excluded.log_key,
    witness_key = excluded.witness_key, nats_url = excluded.nats_url, nats_user = excluded.nats_user,
    nats_password = excluded.nats_password, issued_password = excluded.issued_password,
    trust_limit = excluded.trust_limit, removed_at = NULL,
    added_at = CASE WHEN p.removed_at IS NULL THEN p.added_at ELSE now() END

-- name: active_peers
SELECT origin, name, log_key, witness_key, nats_url, nats_user, nats_password, issued_password, trust_limit, added_at
FROM federation.peers WHERE removed_at IS NULL ORDER BY origin

-- name: remove_peer
UPDATE federation.peers SET removed_at = now() WHERE origin = $1 AND removed_at IS NULL RETURNING origin

-- name: upsert_witnessed_log
INSERT INTO federation.witnessed_logs (origin, key) VALUES ($1, $2)
ON CONFLICT (origin) DO UPDATE SET key = excluded.key

-- name: witnessed_logs
SELECT origin, key FROM federation.witnessed_logs ORDER BY origin

-- name: remove_witnessed_log
DELETE FROM federation.witnessed_logs WHERE origin = $1 RETURNING origin
