"""The exchange's pure domain: aggregate state folded from events, and decisions that return new events.

Nothing here talks to a database, the ledger or the web. Personal data arrives already sealed; decisions look
only at who may do what, and in which state. One module per aggregate: ``members`` (and who acts), ``listings``,
``exchanges``, ``payments``.
"""
