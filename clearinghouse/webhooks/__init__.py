"""Signed webhooks: partners hear about what happens to their members and their money."""
