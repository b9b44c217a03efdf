"""Feature plugin folders, loaded by PluginManager; not imported as a package."""
