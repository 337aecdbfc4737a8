"""The partner API under /v2/billing/ (SPEC §8): TensorOne's billing-credits API, mirrored.

Owns authentication by API key, scopes, partner scoping, throttling, idempotency, the error
shape, money as JSON numbers, cursor pagination and the OpenAPI schema. Every write is one call
to a credits or invoices service; every read goes through selectors.
"""
