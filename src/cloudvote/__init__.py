"""cloudvote: one voting app, two shapes (monolith or microservices)."""

__version__ = "0.1.0"
