"""Adapters: how the backend talks to PostgreSQL, Redis, arq and its embedded servers."""
