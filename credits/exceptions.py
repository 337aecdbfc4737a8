"""Domain errors. Each has a stable code and an HTTP status; the API maps them once to
{"error": {"code", "message", "details"}} and the admin once to an error message."""


class DomainError(Exception):
    code = "domain_error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = {k: v for k, v in details.items() if v is not None}


class ValidationFailed(DomainError):
    code = "validation_error"
    status = 400


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Conflict(DomainError):
    """The request is valid but the object's state does not allow it (e.g. void a voided grant)."""

    code = "conflict"
    status = 409


class BusinessRuleViolation(DomainError):
    """Well-formed, but a business rule refuses it (e.g. apply more than is available)."""

    code = "unprocessable"
    status = 422


class PermissionDenied(DomainError):
    code = "forbidden"
    status = 403
