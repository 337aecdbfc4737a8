"""One error shape for every 4xx: {"error": {"code", "message", "details"}}.

Domain errors carry their own code and status; DRF's exceptions (validation, malformed JSON,
authentication, scopes, throttling, not found) are mapped here once.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from credits.exceptions import DomainError


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail, prefix: str = "") -> list[tuple[str, str]]:
    """DRF's nested validation detail as (field path, message) pairs."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            out += _flatten(value, path)
        return out
    if isinstance(detail, list):
        if all(isinstance(d, str) for d in detail):
            return [(prefix, str(d)) for d in detail]
        out = []
        for i, value in enumerate(detail):
            if value:
                out += _flatten(value, f"{prefix}[{i}]")
        return out
    return [(prefix, str(detail))]


def _validation_response(exc: exceptions.ValidationError) -> Response:
    pairs = _flatten(exc.detail)
    message = "; ".join(f"{field}: {msg}" if field else msg for field, msg in pairs)
    fields: dict[str, list[str]] = {}
    for field, msg in pairs:
        fields.setdefault(field or "body", []).append(msg)
    details = {"fields": fields}
    if len(fields) == 1:
        details["field"] = next(iter(fields))
    return Response(
        error_body("validation_error", message or "Invalid request.", details), status=400
    )


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, Http404 | exceptions.NotFound):
        message = str(exc) if str(exc) and isinstance(exc, exceptions.NotFound) else "Not found."
        return Response(error_body("not_found", message), status=404)
    if isinstance(exc, exceptions.ValidationError):
        return _validation_response(exc)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(error_body("forbidden", "Forbidden."), status=403)
    if isinstance(exc, exceptions.ParseError):
        return Response(error_body("malformed_json", str(exc.detail)), status=400)
    if isinstance(exc, exceptions.Throttled):
        wait = int(exc.wait or 1)
        response = Response(
            error_body(
                "rate_limited",
                f"Too many requests for this API key; retry in {wait} s.",
                {"retryAfter": wait},
            ),
            status=429,
        )
        response["Retry-After"] = str(wait)
        return response
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        if isinstance(exc, exceptions.NotAuthenticated):
            code = "unauthenticated"
        response = Response(error_body(code, str(exc.detail)), status=exc.status_code)
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response
    return None


def not_found_view(request, *args, **kwargs):
    """Any path under /v2/billing/ that names no endpoint: a 404 in the API's shape."""
    return JsonResponse(
        error_body(
            "not_found",
            f"No endpoint {request.path}. Paths have no trailing slash; see /v2/billing/docs.",
        ),
        status=404,
    )
