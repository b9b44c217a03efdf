"""Domain model packages: each subfolder has a `manifest.toml` and a `models.py`.

They are discovered and imported by `init_domain_registry`; read model classes from the
registry (`app.state.domain_registry.model("User")`) rather than importing them directly.
"""
