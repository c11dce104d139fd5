"""End-of-day batch files: a store's operations uploaded at once and applied in the background."""
