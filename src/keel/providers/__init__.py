"""Where models run: the Provider protocol, one adapter per upstream API, and the plugin
registry (`plugins.ProviderPlugins`) that maps a provider's kind to its factory."""
