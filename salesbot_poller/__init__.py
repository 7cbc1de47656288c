"""SalesBot Poller: amoCRM call events -> recording -> transcript -> analysis -> Telegram."""

__version__ = "0.1.0"
