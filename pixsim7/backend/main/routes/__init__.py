"""Route plugin folders (the core API), loaded by PluginManager; not imported as a package."""
