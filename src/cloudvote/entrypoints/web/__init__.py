"""The Flask apps: vote, result, and both together for the monolith."""
