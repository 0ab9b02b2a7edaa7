"""Drafting: `issues list/new`, `render`, `preview`, `lint`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import NewsletterError
from .app import App, listen_error, pass_app, recipient_for, resolve_issue


@click.group()
def issues() -> None:
    """List issues and scaffold new ones."""


@issues.command("list")
@pass_app
def issues_list(app: App) -> None:
    """List the issues in issues_dir with their date, sign-off state and subject."""
    from ..content import load_issue
    from ..errors import ContentError
    from ..review import sign_off_state

    directory = Path(app.settings.issues_dir)
    paths = sorted(directory.glob("*.md")) if directory.is_dir() else []
    if not paths:
        click.echo(f"No issues in {directory}/ yet. Start one: newsletter issues new SLUG")
        return
    for path in paths:
        try:
            issue = load_issue(path)
            click.echo(f"{issue.slug:<40} {issue.date:<11} {sign_off_state(issue):<10} {issue.subject}")
        except ContentError as exc:
            click.echo(f"{path.stem:<40} {'':<11} (cannot read: {exc})")


@issues.command("new")
@click.argument("slug")
@pass_app
def issues_new(app: App, slug: str) -> None:
    """Create issues/SLUG.md from the scaffold, with one example of every block."""
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,80}", slug):
        raise NewsletterError("SLUG must be lower-case letters, digits and dashes, e.g. 2027-02-sleep")
    target = Path(app.settings.issues_dir) / f"{slug}.md"
    if target.exists():
        raise NewsletterError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((app.settings.templates_path / "issue-scaffold.md").read_text(encoding="utf-8"), encoding="utf-8")
    click.echo(f"Created {target}. Edit it, then: newsletter lint {slug}")


@issues.command("approve")
@click.argument("issue")
@click.option("--by", "by", required=True, metavar="NAME", help="The reviewing clinician's name.")
@click.option("--force", is_flag=True, help="Approve even though lint finds errors.")
@pass_app
def issues_approve(app: App, issue: str, by: str, force: bool) -> None:
    """Record a clinician's sign-off of this version of the issue (needed for a real send).

    An issue with lint errors is refused unless --force. The name is not authenticated:
    this records an honest reviewer's approval, it does not prove who gave it."""
    from ..review import approve

    path = resolve_issue(app, issue)
    review = approve(path, by, settings=app.settings, force=force, given=issue)
    click.echo(f"Approved {path} by {review['by']} on {review['on']} (version {review['hash'][:12]}).")
    click.echo("Any later edit needs a new approval before a real send.")


@click.command()
@click.argument("issue")
@click.option("--subscriber", "email", help="Personalise for this subscriber (default: a sample reader).")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write here instead of stdout.",
)
@pass_app
def render(app: App, issue: str, email: str | None, fmt: str, output: str) -> None:
    """Render an issue as HTML, plain text or the full MIME message."""
    from ..content import load_issue
    from ..render import Renderer
    from ..tokens import Tokens

    settings = app.settings
    renderer = Renderer(settings)
    parsed = load_issue(resolve_issue(app, issue))
    rendered = renderer.render(parsed)
    recipient = recipient_for(app, email)
    fields = renderer.personal_fields(recipient, None, Tokens(settings.secret_key))
    html, text = rendered.personalise(recipient, fields)
    if fmt == "eml":
        from ..message import MessageBuilder

        data = MessageBuilder(settings).build(rendered, recipient, html, text, fields).as_bytes()
    else:
        data = (html if fmt == "html" else text).encode("utf-8")
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(output).write_bytes(data)
        click.echo(f"Wrote {output} ({len(data)} bytes).", err=True)


@click.command()
@click.argument("issue")
@click.option("--subscriber", "email", help="Personalise for this subscriber.")
@click.option("--serve", is_flag=True, help="Serve on localhost and re-render when files change.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@pass_app
def preview(app: App, issue: str, email: str | None, serve: bool, port: int, no_browser: bool) -> None:
    """Write the HTML and text previews and open them in a browser."""
    import webbrowser

    from ..preview import PreviewServer, write_preview

    path = resolve_issue(app, issue)
    recipient = recipient_for(app, email)
    if serve:
        try:
            server = PreviewServer(app.settings, path, recipient, port)
        except OSError as exc:
            raise listen_error("127.0.0.1", port, exc) from None
        click.echo(
            f"Serving {path} at {server.url} (text at {server.url}text, proof sheet at {server.url}proofs); "
            "Ctrl-C to stop."
        )
        if not no_browser:
            webbrowser.open(server.url)
        server.serve_forever()
        return
    html_path, text_path = write_preview(app.settings, path, recipient, Path("preview"))
    click.echo(f"Wrote {html_path} and {text_path}.")
    if not no_browser:
        webbrowser.open(html_path.resolve().as_uri())


@click.command()
@click.argument("issue")
@click.option("--check-links", is_flag=True, help="Also request every link (with a timeout).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per link for --check-links.")
@click.option("--contrast", is_flag=True, help="Also measure text contrast in light and dark mode (needs Chromium).")
@pass_app
def lint(app: App, issue: str, check_links: bool, timeout: float, contrast: bool) -> None:
    """Check an issue: subject, images, links, footer, disclaimers, crisis resources."""
    from ..lint import Linter

    findings = Linter(app.settings, check_links=check_links, link_timeout=timeout).lint(resolve_issue(app, issue))
    if contrast:
        from ..contrast import check_issue_contrast

        findings += check_issue_contrast(app.settings, resolve_issue(app, issue))
    for finding in findings:
        click.echo(str(finding))
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if errors:
        click.echo(f"{errors} error(s), {warnings} warning(s).", err=True)
        sys.exit(1)
    click.echo(f"OK: no errors, {warnings} warning(s).")
