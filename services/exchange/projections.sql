-- Upserts that keep the exchange's read models equal to a fold of each stream (see projections.py).

-- name: upsert_member
INSERT INTO exchange.members
    (id, status, role, account, name, email, skills, area, bio, password_hash, joined_at, approved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, role = EXCLUDED.role, account = EXCLUDED.account, name = EXCLUDED.name,
    email = EXCLUDED.email, skills = EXCLUDED.skills, area = EXCLUDED.area, bio = EXCLUDED.bio,
    password_hash = EXCLUDED.password_hash, joined_at = EXCLUDED.joined_at, approved_at = EXCLUDED.approved_at

-- name: upsert_invitation
INSERT INTO exchange.invitations (id, token_sha256, role, expires, created_by, created_at, used_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET used_by = EXCLUDED.used_by

-- name: upsert_listing
INSERT INTO exchange.listings
    (id, member, kind, category, title, description, area, availability, shared, status, expires,
     created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET
    category = EXCLUDED.category, title = EXCLUDED.title, description = EXCLUDED.description,
    area = EXCLUDED.area, availability = EXCLUDED.availability, shared = EXCLUDED.shared,
    status = EXCLUDED.status, expires = EXCLUDED.expires, updated_at = EXCLUDED.updated_at

-- name: upsert_exchange
INSERT INTO exchange.exchanges (id, proposer, listing, category, status, note, memo, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, note = EXCLUDED.note, memo = EXCLUDED.memo, updated_at = EXCLUDED.updated_at

-- name: upsert_parties
INSERT INTO exchange.exchange_parties (exchange, member, side, answer)
SELECT $1, m, s, a FROM unnest($2::text[], $3::text[], $4::text[]) AS t(m, s, a)
ON CONFLICT (exchange, member) DO UPDATE SET answer = EXCLUDED.answer

-- name: upsert_lines
INSERT INTO exchange.exchange_lines
    (exchange, n, provider, receiver, state, minutes, transfer, ledger_index, settled_at)
SELECT $1, n, p, r, s, m, t, i, a
FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::bigint[],
            $9::timestamptz[]) AS u(n, p, r, s, m, t, i, a)
ON CONFLICT (exchange, n) DO UPDATE SET
    state = EXCLUDED.state, minutes = EXCLUDED.minutes, transfer = EXCLUDED.transfer,
    ledger_index = EXCLUDED.ledger_index, settled_at = EXCLUDED.settled_at

-- name: upsert_payment
INSERT INTO exchange.payments
    (id, kind, payer, payee, minutes, made_by, status, memo, transfer, ledger_index, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, memo = EXCLUDED.memo, transfer = EXCLUDED.transfer,
    ledger_index = EXCLUDED.ledger_index

-- name: upsert_pot
INSERT INTO exchange.pot (account) VALUES ($1) ON CONFLICT (one) DO UPDATE SET account = EXCLUDED.account
