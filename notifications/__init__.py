"""Expiry warnings (SPEC §9): which credit was warned at which threshold, the messages that
carried the warnings (email to the billing address, signed webhook to the partner) and every
delivery attempt."""
