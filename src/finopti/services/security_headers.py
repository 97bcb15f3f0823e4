"""Browser security headers on every response of a service that serves pages (the ui): set in the app, so
they hold behind either gateway (Envoy locally, APISIX in compose).

- Content-Security-Policy: only this origin's scripts, styles and connections; no inline script or style
  (the pages load ES modules and a stylesheet from /static, and set styles through the CSSOM); no plugins,
  no <base>, forms post to this origin only, and no framing (clickjacking).
- X-Content-Type-Options: nosniff, so a JSON or text answer is never run as a script.
- X-Frame-Options: DENY for browsers that predate frame-ancestors.
- Referrer-Policy: no-referrer, so no URL (with whatever it holds) leaves for another site.
"""

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
_ENCODED = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_NAMES = {k for k, _ in _ENCODED}


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP response (errors and static files included), replacing any the app
    set itself."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _NAMES]
                message = {**message, "headers": headers + _ENCODED}
            await send(message)

        await self.app(scope, receive, send_with_headers)
