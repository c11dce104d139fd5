"""The coalition's rewards catalogue: rewards partners supply, priced in points."""
