"""Ray Serve ingress: REST and WebSocket routes over FastAPI."""
