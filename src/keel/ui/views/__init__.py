"""Console pages, one module per area; each route declares its permission."""
