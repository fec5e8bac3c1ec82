"""HTTP route handlers: validate the request, call the engine, return the response model."""
