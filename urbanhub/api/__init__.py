"""HTTP adapter: FastAPI app factory, routers per capability, problem+json errors."""
