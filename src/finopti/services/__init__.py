"""One package per service; each has `create_app(settings)` and imports no other service."""
