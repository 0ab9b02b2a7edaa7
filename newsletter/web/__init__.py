"""The subscriber web app: unsubscribe (RFC 8058 one-click and a confirmation page), double
opt-in signup, preference centre, archive, and provider webhooks.

    newsletter serve            # waitress on 127.0.0.1:8000
    waitress-serve --call newsletter.web:create_app
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import Settings, load_settings
from ..db import Database
from ..feedback import FeedbackLog, SoftBouncePolicy
from ..subscribers import SubscriberList
from ..tokens import Tokens

MAX_BODY = 64 * 1024  # forms and webhook batches are small; anything larger is refused
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    settings = settings or load_settings()
    settings.require("secret_key", why="to run the web app")
    app = Flask(
        __name__,
        template_folder=str(settings.templates_path / "web"),
        static_folder=str(settings.templates_path / "web" / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=False,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_STORAGE_URI=settings.rate_limit_storage,
    )
    if test_config:
        app.config.update(test_config)
    if settings.proxy_count:
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=settings.proxy_count, x_proto=settings.proxy_count, x_host=settings.proxy_count
        )
    app.extensions["newsletter"] = WebContext(settings)
    app.jinja_env.globals.update(
        organization=lambda: settings.organization, postal_address=lambda: settings.postal_address
    )
    csrf.init_app(app)
    limiter.init_app(app)

    from .pages import pages
    from .webhooks import webhooks

    app.register_blueprint(pages)
    app.register_blueprint(webhooks)
    csrf.exempt(webhooks)
    _register_handlers(app)
    return app


class WebContext:
    """What the views need, built once per app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings.database_url)
        self.subscribers = SubscriberList(self.db, settings.secret_key)
        self.tokens = Tokens(settings.secret_key)
        self.feedback = FeedbackLog(self.db, SoftBouncePolicy(settings.soft_bounce_limit, settings.soft_bounce_days))


def _register_handlers(app: Flask) -> None:
    @app.after_request
    def security_headers(response: Response) -> Response:
        embeddable = request.endpoint == "pages.subscribe"
        archive = request.endpoint == "pages.archive_issue"
        # Archived issues are email HTML: inline styles are how email is written.
        style = "'self' 'unsafe-inline'" if archive else "'self'"
        ancestors = "*" if embeddable else "'none'"
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src {style}; img-src 'self' https: data:; form-action 'self'; "
            f"base-uri 'none'; frame-ancestors {ancestors}"
        )
        if not embeddable:
            response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Links carry tokens: never leak them to other sites through Referer.
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError):
        return render_template(
            "error.html",
            title="Please try again",
            message="This form expired or was not sent from our page. Reload it and try again.",
        ), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        messages = {
            400: "This request could not be understood.",
            404: "This page or link does not exist. If you followed a link from an email, it may have been "
            "cut off: try copying the whole link.",
            405: "This page cannot be used that way.",
            413: "That request was too large.",
            429: "Too many requests from your address. Please wait a few minutes and try again.",
        }
        message = messages.get(error.code or 500, "Something went wrong.")
        return render_template("error.html", title=error.name, message=message), error.code
