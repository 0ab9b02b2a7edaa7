"""Previews for the people drafting an issue: files on disk, or a live-reloading local server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .config import Settings
from .content import load_issue
from .errors import ContentError
from .proofs import PREVIEW_LINK, proof_sheet_html
from .render import Recipient, Renderer
from .tokens import Tokens

RELOAD_SCRIPT = """<script>
(function () {
  var seen = null;
  setInterval(function () {
    fetch('/__version').then(function (r) { return r.text(); }).then(function (v) {
      if (seen !== null && v !== seen) { location.reload(); }
      seen = v;
    }).catch(function () {});
  }, 1000);
})();
</script>"""


def render_preview(settings: Settings, issue_path: Path, recipient: Recipient) -> tuple[str, str]:
    renderer = Renderer(settings)
    rendered = renderer.render(load_issue(issue_path))
    fields = renderer.personal_fields(recipient, None, Tokens(settings.secret_key or "preview-only"))
    return rendered.personalise(recipient, fields)


def write_preview(settings: Settings, issue_path: Path, recipient: Recipient, directory: Path) -> tuple[Path, Path]:
    html, text = render_preview(settings, issue_path, recipient)
    directory.mkdir(parents=True, exist_ok=True)
    html_path = directory / f"{issue_path.stem}.html"
    text_path = directory / f"{issue_path.stem}.txt"
    html_path.write_text(html, encoding="utf-8")
    text_path.write_text(text, encoding="utf-8")
    return html_path, text_path


class PreviewServer:
    """Serves the issue at / (HTML) and /text, re-rendering when the issue or a template changes."""

    def __init__(self, settings: Settings, issue_path: Path, recipient: Recipient, port: int):
        self.settings = settings
        self.issue_path = issue_path
        self.recipient = recipient
        self._lock = threading.Lock()
        self._version: tuple | None = None
        self._pages = ("", "")
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def _watched_version(self) -> tuple:
        paths = [self.issue_path, *sorted(self.settings.templates_path.rglob("*"))]
        return tuple((str(path), path.stat().st_mtime_ns) for path in paths if path.is_file())

    def pages(self) -> tuple[str, str, str]:
        """(html, text, version), re-rendered only when a watched file changed."""
        with self._lock:
            version = self._watched_version()
            if version != self._version:
                try:
                    self._pages = render_preview(self.settings, self.issue_path, self.recipient)
                except ContentError as exc:
                    message = str(exc).replace("&", "&amp;").replace("<", "&lt;")
                    self._pages = (f"<pre style='color:#b00020'>{message}</pre>", str(exc))
                self._version = version
            return self._pages[0], self._pages[1], str(hash(version))

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                html, text, version = server.pages()
                if self.path == "/":
                    body, kind = html.replace("</body>", PREVIEW_LINK + RELOAD_SCRIPT + "</body>"), "text/html"
                elif self.path == "/proofs":  # drawn on request by headless Chromium: a few seconds
                    body, kind = proof_sheet_html(server.settings, server.issue_path, server.recipient), "text/html"
                elif self.path == "/text":
                    body, kind = text, "text/plain"
                elif self.path == "/__version":
                    body, kind = json.dumps(version), "text/plain"
                else:
                    self.send_error(404)
                    return
                data = body.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def shutdown(self) -> None:
        self.httpd.shutdown()
