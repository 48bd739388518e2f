"""Use cases: casting a vote, draining the queue into the store, reading results.

They talk only to ports, so the same code runs in the monolith and in the services.
"""
