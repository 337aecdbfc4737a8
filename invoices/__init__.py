"""Invoices, their lines and settlement (drawing credits through credits.services)."""
