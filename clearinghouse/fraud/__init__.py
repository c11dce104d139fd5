"""Fraud and risk checks on every points movement, and the operators' review queue."""
