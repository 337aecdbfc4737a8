"""OpenAPI pieces drf-spectacular cannot infer: the Bearer key security scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "billing_api.auth.ApiKeyAuthentication"
    name = "BearerApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A partner API key, made by `manage.py create_api_key PARTNER --scopes ...`: "
                "`Authorization: Bearer ck_...`."
            ),
        }
