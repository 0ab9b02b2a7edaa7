"""Pages subscribers see: unsubscribe, signup and confirmation, preferences, archive."""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from itsdangerous import BadSignature
from sqlalchemy import func, select

from ..addresses import normalize_email
from ..errors import DataError, NotFound
from ..models import Campaign, Subscriber
from ..render import EMPTY_RECIPIENT, RenderedIssue
from ..signups import RESUBSCRIBE_SOURCE
from ..tokens import InvalidToken, TokenData
from . import csrf, limiter

log = logging.getLogger(__name__)
pages = Blueprint("pages", __name__)
ONE_CLICK_VALUE = "One-Click"
HONEYPOT = "website"  # a field people never see (hidden by CSS); bots fill it in


def web():
    return current_app.extensions["newsletter"]


def invalid_link(message: str = "This link is not valid") -> Response:
    """The one answer for forged, tampered, wrong-purpose, expired, used and erased
    people's links alike (400): a link that opens nobody says nothing about anybody."""
    return Response(
        render_template(
            "error.html",
            title="This link is not valid",
            message=f"{message}. If you copied it from an email, make sure you copied all of it.",
        ),
        400,
    )


def read_token(purpose: str, token: str) -> TokenData:
    try:
        return web().tokens.read(purpose, token)
    except InvalidToken as exc:
        abort(invalid_link(str(exc).capitalize()))


def subscriber_for(data: TokenData) -> Subscriber:
    try:
        return web().subscribers.from_link(data)
    except NotFound:
        abort(invalid_link())


def topic_names(tags: list[str]) -> list[str]:
    return [tag.replace("-", " ").replace("_", " ").capitalize() for tag in tags]


@pages.route("/")
def index():
    return redirect(url_for("pages.subscribe"))


# -- unsubscribe -------------------------------------------------------------------------
@pages.route("/u/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058 one-click posts carry no cookie and no token; the form path checks CSRF itself
def unsubscribe(token: str):
    data = read_token("unsubscribe", token)
    if request.method == "POST" and request.form.get("List-Unsubscribe") == ONE_CLICK_VALUE:
        # RFC 8058: answer 200, no redirect, idempotent.
        if data.key is None and data.legacy_id is None:  # "nobody" (`newsletter doctor` probes with it)
            return Response("Nothing to change.\n", 200, mimetype="text/plain")
        try:
            web().subscribers.unsubscribe_link(data, "one-click")
        except NotFound:
            return Response("This link is not valid.\n", 400, mimetype="text/plain")
        return Response("You are unsubscribed.\n", 200, mimetype="text/plain")
    subscriber = subscriber_for(data)
    if request.method == "POST":
        csrf.protect()  # the form path of this exempt view still needs its CSRF token
        web().subscribers.unsubscribe_link(data, "web")
        return render_template("unsubscribed.html", email=subscriber.email, token=token)
    return render_template(
        "unsubscribe.html",
        email=subscriber.email,
        token=token,
        already=subscriber.status in ("unsubscribed", "bounced", "complained"),
    )


@pages.route("/u/<token>/resubscribe", methods=["POST"])
def resubscribe(token: str):
    """Undo within the window after this link unsubscribed; otherwise a new double opt-in."""
    data = read_token("unsubscribe", token)
    settings = web().settings
    try:
        subscriber, undone = web().subscribers.undo_unsubscribe(
            data, timedelta(hours=settings.resubscribe_window_hours)
        )
    except NotFound:
        return invalid_link()
    if undone:
        return render_template("resubscribed.html", email=subscriber.email)
    web().signups.enqueue(
        subscriber.email,
        "",
        request.remote_addr or "",
        settings.consent_text,
        source=RESUBSCRIBE_SOURCE,
    )
    web().wake_queue()
    return render_template("check_inbox.html", days=settings.confirm_link_days)


# -- signup and double opt-in -------------------------------------------------------------
def _subscribe_limit() -> str:
    return web().settings.subscribe_rate_limit


def _signup_form() -> tuple[dict[str, str], list[str], str | None]:
    """The submitted fields, the topics chosen, and the error to show (None if fine)."""
    form = {"email": request.form.get("email", "").strip(), "name": request.form.get("name", "").strip()[:200]}
    offered = web().settings.topic_list
    topics = [topic for topic in request.form.getlist("topics") if topic in offered]
    try:
        normalize_email(form["email"])
    except DataError:
        return form, topics, "Please enter a valid email address."
    if request.form.get("consent") != "yes":
        return form, topics, "Please tick the box to confirm you want the newsletter."
    return form, topics, None


def _queue_signup(form: dict[str, str], topics: list[str], source: str) -> None:
    settings = web().settings
    # The same work for every address (one queued row): the answer's timing reveals nothing.
    web().signups.enqueue(
        form["email"], form["name"], request.remote_addr or "", settings.consent_text, source=source, tags=topics
    )
    web().wake_queue()


@pages.route("/subscribe", methods=["GET", "POST"])
@limiter.limit(_subscribe_limit, methods=["POST"])
def subscribe():
    settings = web().settings
    context = {"consent_text": settings.consent_text, "offered": settings.topic_list}
    if request.method != "POST":  # GET, and HEAD (Flask answers HEAD with the GET view)
        return render_template("subscribe.html", error=None, form={}, chosen=set(), **context)
    form, topics, error = _signup_form()
    if error:
        return render_template("subscribe.html", error=error, form=form, chosen=set(topics), **context), 400
    _queue_signup(form, topics, "web:subscribe form")
    return render_template("check_inbox.html", days=settings.confirm_link_days)


@pages.route("/subscribe/embed", methods=["GET"])
def embed():
    """The copy-paste form for the clinic's own website, and how to set it up."""
    snippet = embed_snippet()
    return render_template(
        "embed.html", snippet=snippet, origins=web().settings.signup_origins, base=web().settings.base_url
    )


def embed_snippet() -> str:
    settings = web().settings
    return render_template(
        "embed_snippet.html",
        action=f"{settings.base_url.rstrip('/')}{url_for('pages.embedded_signup')}",
        form_token=web().embed_tokens.dumps("signup-form"),
        consent_text=settings.consent_text,
        offered=settings.topic_list,
        honeypot=HONEYPOT,
    ).strip()


@pages.route("/subscribe/embedded", methods=["POST"])
@csrf.exempt  # posted from the clinic's site: no session cookie; checked below instead
@limiter.limit(_subscribe_limit, methods=["POST"])
def embedded_signup():
    """Signups posted by the embedded form: the Origin (or Referer) must be allowed, the
    form token must be ours, and the honeypot field (hidden from people) must be empty."""
    settings = web().settings
    if not origin_allowed(settings):
        return render_template(
            "error.html",
            title="Please try again",
            message="This form was not sent from a site we know. Please sign up on our own page.",
        ), 403
    try:
        web().embed_tokens.loads(request.form.get("form_token", ""))
    except BadSignature:
        return render_template(
            "error.html", title="Please try again", message="This form is out of date. Please sign up on our page."
        ), 400
    form, topics, error = _signup_form()
    if error:
        context = {"consent_text": settings.consent_text, "offered": settings.topic_list}
        return render_template("subscribe.html", error=error, form=form, chosen=set(topics), **context), 400
    if not request.form.get(HONEYPOT):
        _queue_signup(form, topics, "web:embedded form")
    # A bot that filled the honeypot sees the same page and gets nothing.
    return render_template("check_inbox.html", days=settings.confirm_link_days)


def origin_allowed(settings) -> bool:
    """Origin header (or, if a browser sent none, the Referer's origin) is the app itself
    or listed in `signup_origins`."""
    base = urlsplit(settings.base_url)
    allowed = {f"{base.scheme}://{base.netloc}".lower()}
    allowed |= {origin.rstrip("/").lower() for origin in settings.signup_origins}
    origin = request.headers.get("Origin", "")
    if not origin or origin == "null":
        referrer = urlsplit(request.headers.get("Referer", ""))
        origin = f"{referrer.scheme}://{referrer.netloc}" if referrer.scheme and referrer.netloc else ""
    return origin.rstrip("/").lower() in allowed


@pages.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str):
    """GET (and HEAD, which link scanners send) only shows a button; POST confirms."""
    data = read_token("confirm", token)
    signups = web().signups
    waiting = signups.waiting(data.key) if data.key else None
    if waiting is None:
        return invalid_link("This link was already used or has expired")
    if request.method != "POST":  # GET, and HEAD (Flask answers HEAD with the GET view)
        return render_template("confirm.html", email=waiting.email, token=token, topics=topic_names(waiting.tags))
    subscriber = signups.confirm(data.key)
    if subscriber is None:
        return invalid_link("This link was already used or has expired")
    preferences = f"/p/{web().tokens.make('preferences', subscriber.token)}"
    return render_template(
        "confirmed.html", email=subscriber.email, preferences=preferences, topics=topic_names(subscriber.tags)
    )


# -- preference centre ---------------------------------------------------------------------
@pages.route("/p/<token>", methods=["GET", "POST"])
def preferences(token: str):
    data = read_token("preferences", token)
    subscriber = subscriber_for(data)
    offered = web().settings.topic_list
    saved = False
    if request.method == "POST":
        if request.form.get("action") == "unsubscribe":
            web().subscribers.unsubscribe_link(data, "web")
            unsubscribe_token = web().tokens.make("unsubscribe", subscriber.token, data.campaign_id)
            return render_template("unsubscribed.html", email=subscriber.email, token=unsubscribe_token)
        subscriber = web().subscribers.update_preferences(
            data, request.form.get("name", "")[:200], request.form.getlist("topics"), offered
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
        rows = session.execute(
            select(Campaign.slug, Campaign.subject, Campaign.created_at, Campaign.snapshot["date"].as_string())
            .where(Campaign.id.in_(latest))
            .order_by(Campaign.created_at.desc())
        ).all()
    # The issue's own date (front matter), not the day it happened to be sent.
    issues = [
        {"slug": slug, "subject": subject, "date": _issue_date(issue_date) or created_at.date()}
        for slug, subject, created_at, issue_date in rows
    ]
    issues.sort(key=lambda issue: issue["date"], reverse=True)
    return render_template("archive.html", issues=issues)


def _issue_date(value: str | None):
    from datetime import date

    try:
        return date.fromisoformat((value or "")[:10])
    except ValueError:
        return None


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
