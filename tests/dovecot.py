"""A real Dovecot IMAP/POP3 server for tests, with its own configuration in a temporary directory.

Listens on free 127.0.0.1 ports; one user (`bounces`, password `secret`) from a
passwd-file; Maildir storage. Started as root, mail is owned by Dovecot's own
unprivileged user; started as anyone else, everything runs as that user.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .smtp_server import free_port

USER, PASSWORD = "bounces", "secret"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = newsletter-test-{imap_port}
protocols = imap pop3
listen = 127.0.0.1
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root}/mail/%u
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


class DovecotUnavailable(Exception):
    pass


class Dovecot:
    def __init__(self):
        self.binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
        if not self.binary:
            raise DovecotUnavailable("dovecot is not installed (apt-get install -y dovecot-imapd dovecot-pop3d)")
        # Not under pytest's tmp_path: that is private to the test user, and Dovecot's
        # unprivileged processes must reach the mail directory.
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self.root.chmod(0o755)
        self.imap_port, self.pop3_port = free_port(), free_port()
        self.config = self.root / "dovecot.conf"

    def start(self) -> Dovecot:
        if os.geteuid() == 0:
            try:
                internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
            except KeyError:
                raise DovecotUnavailable("the dovecot and dovenull users are missing") from None
            mail_user = internal
            names = (internal.pw_name, login.pw_name)
        else:
            mail_user = pwd.getpwuid(os.getuid())
            names = (mail_user.pw_name, mail_user.pw_name)
        (self.root / "mail").mkdir()
        os.chown(self.root / "mail", mail_user.pw_uid, mail_user.pw_gid)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        self.config.write_text(
            CONFIG.format(
                root=self.root,
                imap_port=self.imap_port,
                pop3_port=self.pop3_port,
                internal_user=names[0],
                login_user=names[1],
                mail_user=mail_user.pw_uid,
                mail_group=mail_user.pw_gid,
            )
        )
        # Output to a file, not a pipe: the daemon it forks would hold a pipe open for ever.
        with open(self.root / "startup.log", "wb") as output:
            started = subprocess.run([self.binary, "-c", str(self.config)], stdout=output, stderr=output)
        if started.returncode != 0:
            reason = (self.root / "startup.log").read_text(errors="replace").strip()[:300]
            self.stop()
            raise DovecotUnavailable(f"dovecot did not start: {reason}")
        for _ in range(100):  # readiness, not timing: wait until the listener answers
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise DovecotUnavailable(f"dovecot did not listen on 127.0.0.1:{self.imap_port}: {self.log()[-300:]}")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        pid_file = self.root / "run" / "master.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, 15)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what the tests use ---------------------------------------------------------------
    def url(self, scheme: str = "imap", folder: str = "INBOX") -> str:
        port = self.imap_port if scheme == "imap" else self.pop3_port
        return f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{port}/{folder if scheme == 'imap' else ''}"

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port)
        client.login(USER, PASSWORD)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        client = self.client()
        for raw in messages:
            client.append(folder, None, None, raw)
        client.logout()

    def count(self, folder: str) -> int:
        client = self.client()
        status, data = client.select(f'"{folder}"', readonly=True)
        client.logout()
        return int(data[0]) if status == "OK" else 0
