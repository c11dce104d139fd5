"""Imports every table module, so the metadata knows the whole schema."""

from clearinghouse.ledger import tables as ledger_tables

__all__ = ["ledger_tables"]
