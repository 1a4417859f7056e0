"""The registry REST API (aiohttp): the app factory in `app`, one module per resource."""
