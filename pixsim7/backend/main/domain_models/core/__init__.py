"""Core domain models: users, their assets and the generation presets."""
