"""Auditors: read-only queries, exports, sealing and verification of the journal."""
