"""This project's own test helpers: a package named `testing`, as many projects have."""
