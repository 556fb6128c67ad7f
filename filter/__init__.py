"""ployfilter: move unsolicited article-sharing and favour requests out of an IMAP inbox."""

__version__ = "0.1.0"
