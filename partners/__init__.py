"""Partners, stores, API keys, request signing and conversion rates."""
