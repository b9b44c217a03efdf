"""Discovery: what is found in folders (manifests, plugin, middleware and model packages)."""
