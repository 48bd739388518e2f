"""The pure domain: polls, votes and the rules between them.

Nothing in this package imports Flask, Redis, SQL or the environment, so the rules can be
tested with plain values and reused by every shape of the app.
"""
