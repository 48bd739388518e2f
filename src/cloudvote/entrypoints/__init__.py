"""Entrypoints: turn HTTP requests, queue loops and command lines into use-case calls."""
