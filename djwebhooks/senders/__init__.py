"""Senders: how one message becomes one HTTP attempt (``base``), and the ORM glue (``orm``)."""
