"""Middleware plugin folders, installed by MiddlewareManager; not imported as a package."""
