"""The federation: neighbouring networks replicate, witness and settle with each other over NATS JetStream."""
