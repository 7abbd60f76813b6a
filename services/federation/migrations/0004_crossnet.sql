-- What became of our payments to neighbours' members: each is 'sent' (in our log), then 'accepted' or 'rejected'
-- (in the neighbour's log), and a rejected one 'reversed' (in our log). Rows come from whichever log is read first,
-- so the order they arrive in does not matter. A payment is in flight while it is sent and neither accepted nor
-- reversed.
CREATE TABLE federation.crossnet (
    transfer text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('sent', 'accepted', 'rejected', 'reversed')),
    peer text NOT NULL,
    minutes integer NOT NULL,
    idx bigint NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transfer, kind)
);
