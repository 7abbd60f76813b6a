"""The outside auditor: verifies a network's public ledger log from public data alone (``timebank audit``)."""
