"""The finance roles: which Django permissions each staff group holds.

Read by the roles data migration (which creates the groups) and by the tests and docs, so the
definition lives in one place. Deleting is granted to nobody: grants, invoices and the ledger
are financial records and end by void or expiry, never by deletion.
"""

VIEWER = "Finance viewer"
ISSUER = "Finance issuer"
APPROVER = "Finance approver"
ADMIN = "Finance admin"

_READ = [
    ("credits", "view_account"),
    ("credits", "view_partner"),
    ("credits", "view_creditgrant"),
    ("credits", "view_credithold"),
    ("credits", "view_ledgerentry"),
    ("credits", "view_grantevent"),
    ("invoices", "view_invoice"),
    ("invoices", "view_invoiceline"),
    ("invoices", "view_invoiceevent"),
]

# The maker: issues credits (one by one or a campaign from CSV), opens accounts and drafts
# invoices and finalizes them.
_ISSUE = [
    ("credits", "add_creditgrant"),
    ("credits", "add_account"),
    ("credits", "change_account"),
    ("invoices", "add_invoice"),
    ("invoices", "change_invoice"),
    ("invoices", "finalize_invoice"),
]

# The checker: approves what others issued above the threshold, and does what takes money back
# or moves it (void, transfer) or closes an invoice (void, paid).
_APPROVE = [
    ("credits", "approve_creditgrant"),
    ("credits", "void_creditgrant"),
    ("credits", "transfer_creditgrant"),
    ("invoices", "void_invoice"),
    ("invoices", "pay_invoice"),
]

_ADMINISTER = [
    ("credits", "add_partner"),
    ("credits", "change_partner"),
    ("credits", "view_apikey"),
    ("admin", "view_logentry"),
]

ROLES: dict[str, list[tuple[str, str]]] = {
    VIEWER: _READ,
    ISSUER: _READ + _ISSUE,
    APPROVER: _READ + _APPROVE,
    ADMIN: _READ + _ISSUE + _APPROVE + _ADMINISTER,
}
