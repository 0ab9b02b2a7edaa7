"""newsletter: write an issue in Markdown, render it for every mail client, send it once."""

__version__ = "0.1.0"
