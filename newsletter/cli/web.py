"""`newsletter serve`: the subscriber web app."""

from __future__ import annotations

import click

from .app import App, listen_error, pass_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--threads", default=8, show_default=True, type=int)
@pass_app
def serve(app: App, host: str, port: int, threads: int) -> None:
    """Serve the subscriber web app (unsubscribe, signup, preferences, archive, webhooks) with waitress."""
    import logging

    from waitress.server import create_server

    from ..web import create_app

    web_app = create_app(app.settings)
    # Bind before saying we serve: a busy port is an error, not a traceback after the banner.
    try:
        server = create_server(web_app, host=host, port=port, threads=threads, ident="newsletter")
    except OSError as exc:
        raise listen_error(host, port, exc) from None
    logging.basicConfig()  # waitress reports request errors through logging, as waitress.serve sets up
    if app.settings.inbox_poll and app.settings.inbox_url:
        from ..inbox import InboxPoller

        InboxPoller(app.settings, app.db, log=lambda line: click.echo(line, err=True)).start()
        click.echo(f"Checking {app.settings.inbox_url.partition(':')[0]} inbox every {app.settings.inbox_poll:g} min.")
    click.echo(f"Serving on http://{host}:{port}/ (public URL: {app.settings.base_url}); Ctrl-C to stop.")
    server.run()
