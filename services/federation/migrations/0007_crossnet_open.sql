-- Our payments to neighbours still in flight (sent, and neither accepted nor reversed), kept as the steps arrive, so
-- that the status sums what is in flight now rather than every payment ever made.
CREATE TABLE federation.crossnet_open (
    transfer text PRIMARY KEY,
    peer text NOT NULL,
    minutes integer NOT NULL
);

INSERT INTO federation.crossnet_open (transfer, peer, minutes)
SELECT s.transfer, s.peer, s.minutes
FROM federation.crossnet s
WHERE s.kind = 'sent' AND NOT EXISTS (
    SELECT 1 FROM federation.crossnet d WHERE d.transfer = s.transfer AND d.kind IN ('accepted', 'reversed')
);

CREATE INDEX crossnet_open_peer ON federation.crossnet_open (peer);
