"""One exception hierarchy: the CLI catches NewsletterError and prints one line."""


class NewsletterError(Exception):
    """A user or data error with a message fit to show as-is."""

    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint:
            self.hint = hint


class ConfigError(NewsletterError):
    """A missing or invalid setting."""


class DataError(NewsletterError):
    """Bad input data: an address, a CSV row, an unknown subscriber."""


class NotFound(DataError):
    """The thing asked for does not exist."""


class ContentError(NewsletterError):
    """An issue file or template that cannot be rendered; message starts with FILE:LINE."""


class DeliveryError(NewsletterError):
    """A delivery adapter could not be used at all (bad credentials, unreachable host)."""
