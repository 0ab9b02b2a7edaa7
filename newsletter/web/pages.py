"""Pages subscribers see: unsubscribe, signup and confirmation, preferences, archive."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from sqlalchemy import func, select

from ..addresses import normalize_email, redact_addresses
from ..delivery import make_adapter
from ..errors import DataError, DeliveryError, NotFound
from ..message import transactional
from ..models import Campaign, Subscriber
from ..render import EMPTY_RECIPIENT, RenderedIssue
from ..tokens import InvalidToken, TokenData
from . import csrf, limiter

log = logging.getLogger(__name__)
pages = Blueprint("pages", __name__)
ONE_CLICK_VALUE = "One-Click"


def web():
    return current_app.extensions["newsletter"]


def read_token(purpose: str, token: str) -> TokenData:
    try:
        return web().tokens.read(purpose, token)
    except InvalidToken as exc:
        abort(
            Response(
                render_template(
                    "error.html",
                    title="This link is not valid",
                    message=f"{str(exc).capitalize()}. If you copied it from an email, make sure you copied all of it.",
                ),
                400,
            )
        )


def load_subscriber(subscriber_id: int) -> Subscriber | None:
    with web().db.session() as session:
        return session.get(Subscriber, subscriber_id)


@pages.route("/")
def index():
    return redirect(url_for("pages.subscribe"))


# -- unsubscribe -------------------------------------------------------------------------
@pages.route("/u/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058 one-click posts carry no cookie and no token; the form path checks CSRF itself
def unsubscribe(token: str):
    data = read_token("unsubscribe", token)
    if request.method == "POST" and request.form.get("List-Unsubscribe") == ONE_CLICK_VALUE:
        # RFC 8058: answer 200, no redirect, idempotent; an erased address has nothing to change.
        try:
            web().subscribers.unsubscribe_id(data.subscriber_id, "one-click", data.campaign_id)
        except NotFound:
            pass
        return Response("You are unsubscribed.\n", 200, mimetype="text/plain")
    subscriber = load_subscriber(data.subscriber_id)
    if subscriber is None:
        return render_template(
            "error.html",
            title="Not on our list",
            message="This address is no longer on our list. Nothing more will be sent to it.",
        ), 404
    if request.method == "POST":
        csrf.protect()  # the form path of this exempt view still needs its CSRF token
        web().subscribers.unsubscribe_id(data.subscriber_id, "web", data.campaign_id)
        return render_template("unsubscribed.html", email=subscriber.email, token=token)
    return render_template(
        "unsubscribe.html",
        email=subscriber.email,
        token=token,
        already=subscriber.status in ("unsubscribed", "bounced", "complained"),
    )


@pages.route("/u/<token>/resubscribe", methods=["POST"])
def resubscribe(token: str):
    data = read_token("unsubscribe", token)
    try:
        subscriber = web().subscribers.resubscribe_id(data.subscriber_id, "web")
    except NotFound:
        abort(404)
    return render_template("resubscribed.html", email=subscriber.email)


# -- signup and double opt-in -------------------------------------------------------------
def _subscribe_limit() -> str:
    return web().settings.subscribe_rate_limit


@pages.route("/subscribe", methods=["GET", "POST"])
@limiter.limit(_subscribe_limit, methods=["POST"])
def subscribe():
    settings = web().settings
    if request.method == "GET":
        return render_template("subscribe.html", consent_text=settings.consent_text, error=None, form={})
    form = {"email": request.form.get("email", "").strip(), "name": request.form.get("name", "").strip()}
    error = None
    try:
        normalize_email(form["email"])
    except DataError:
        error = "Please enter a valid email address."
    if not error and request.form.get("consent") != "yes":
        error = "Please tick the box to confirm you want the newsletter."
    if error:
        return render_template("subscribe.html", consent_text=settings.consent_text, error=error, form=form), 400
    subscriber = web().subscribers.signup(
        form["email"],
        form["name"][:200],
        request.remote_addr or "",
        settings.consent_text,
        source=f"web:{request.referrer or 'subscribe form'}"[:200],
    )
    if subscriber is not None:
        _send_confirmation(subscriber)
    # The same answer whether or not the address was known: the form reveals nothing.
    return render_template("check_inbox.html")


def _send_confirmation(subscriber: Subscriber) -> None:
    settings = web().settings
    link = f"{settings.base_url.rstrip('/')}/confirm/{web().tokens.make('confirm', subscriber.id)}"
    context = {"link": link, "organization": settings.organization, "postal_address": settings.postal_address}
    message = transactional(
        settings,
        subscriber.email,
        subscriber.name,
        f"Please confirm your subscription to {settings.organization}",
        render_template("confirm_email.txt", **context),
        render_template("confirm_email.html", **context),
    )
    try:
        with make_adapter(settings, folder="transactional") as adapter:
            results = list(adapter.send([message]))
    except DeliveryError as exc:
        log.error("confirmation email not sent: %s", exc)
        return
    if not results[0].accepted:
        log.error("confirmation email not sent: %s", redact_addresses(results[0].reason))


@pages.route("/confirm/<token>")
def confirm(token: str):
    data = read_token("confirm", token)
    try:
        subscriber = web().subscribers.confirm_id(data.subscriber_id)
    except NotFound:
        abort(404)
    if subscriber.status != "active":
        return render_template(
            "error.html", title="Cannot confirm", message="This address cannot be subscribed. Please contact us."
        ), 400
    preferences = f"/p/{web().tokens.make('preferences', subscriber.id)}"
    return render_template("confirmed.html", email=subscriber.email, preferences=preferences)


# -- preference centre ---------------------------------------------------------------------
@pages.route("/p/<token>", methods=["GET", "POST"])
def preferences(token: str):
    data = read_token("preferences", token)
    subscriber = load_subscriber(data.subscriber_id)
    if subscriber is None:
        abort(404)
    offered = web().settings.topic_list
    saved = False
    if request.method == "POST":
        if request.form.get("action") == "unsubscribe":
            web().subscribers.unsubscribe_id(data.subscriber_id, "web", data.campaign_id)
            unsubscribe_token = web().tokens.make("unsubscribe", data.subscriber_id, data.campaign_id)
            return render_template("unsubscribed.html", email=subscriber.email, token=unsubscribe_token)
        subscriber = web().subscribers.update_preferences(
            data.subscriber_id, request.form.get("name", "")[:200], request.form.getlist("topics"), offered
        )
        saved = True
    return render_template(
        "preferences.html", subscriber=subscriber, offered=offered, saved=saved, chosen=set(subscriber.tags)
    )


# -- archive ------------------------------------------------------------------------------
@pages.route("/archive")
def archive():
    """Each issue once, as last sent; only the columns the list shows (no snapshots)."""
    with web().db.session() as session:
        latest = select(func.max(Campaign.id)).where(Campaign.status == "done").group_by(Campaign.slug)
        issues = session.execute(
            select(Campaign.slug, Campaign.subject, Campaign.created_at)
            .where(Campaign.id.in_(latest))
            .order_by(Campaign.created_at.desc())
        ).all()
    return render_template("archive.html", issues=issues)


@pages.route("/archive/<slug>")
def archive_issue(slug: str):
    """The latest finished campaign of this issue: what was actually sent."""
    with web().db.session() as session:
        campaign = session.scalars(
            select(Campaign)
            .where(Campaign.slug == slug, Campaign.status == "done")
            .order_by(Campaign.id.desc())
            .limit(1)
        ).first()
    if campaign is None:
        abort(404)
    rendered = RenderedIssue.from_snapshot(campaign.snapshot)
    base = web().settings.base_url.rstrip("/")
    # No personal data in the archive: a generic greeting and links to the signup page.
    fields = {
        "greeting": "Hello,",
        "email": "you",
        "unsubscribe_url": f"{base}/subscribe",
        "preferences_url": f"{base}/subscribe",
    }
    html, _ = rendered.fill(rendered.values_for(EMPTY_RECIPIENT, fields))
    return Response(html, mimetype="text/html")
