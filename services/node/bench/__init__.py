"""The benchmarks (`timebank bench ledger|audit|exchange`): they start servers and wire services, so they sit with
the composition root."""
