"""Accounts, partners, credit grants, holds, the ledger and drawdown."""
