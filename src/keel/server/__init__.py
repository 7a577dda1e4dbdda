"""HTTP: the app factory and routers, translating requests into service calls."""
