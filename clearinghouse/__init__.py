"""Coalition loyalty-points clearing house."""
