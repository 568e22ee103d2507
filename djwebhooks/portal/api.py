"""Placeholder: the API, written next."""
