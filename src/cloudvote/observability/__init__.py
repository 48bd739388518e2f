"""Logs, metrics and traces: how an operator sees what the services do (OBS-02)."""
