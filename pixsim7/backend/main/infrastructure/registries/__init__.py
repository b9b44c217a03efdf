"""Registries: what one app holds while it runs (events, components, providers, job kinds)."""
