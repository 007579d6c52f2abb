"""Keep a Saxo Bank OpenAPI OAuth2 token cache fresh, one cycle per invocation."""

__version__ = "0.1.0"
