"""Where models run: the Provider protocol and one adapter per upstream API."""
