-- Our ledger now records each neighbour's acceptance of our payments (ledger.crossnet.accepted.v1), and until it
-- has, counts the payment as in flight. Acceptances read before this version were only noted here: queue their
-- records now, under the key the replicator uses, so our ledger settles them too (it records each one once).
INSERT INTO federation.outbox (key, kind, payload)
SELECT 'accept ' || c.transfer, 'federation.settle.accept.v1',
       convert_to(json_build_object(
           'type', 'federation.settle.accept.v1', 'origin', c.peer, 'transfer', c.transfer, 'index', c.idx
       )::text, 'UTF8')
FROM federation.crossnet c
WHERE c.kind = 'accepted'
ON CONFLICT (key) DO NOTHING;
