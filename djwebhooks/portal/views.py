"""Placeholder: the pages, written next."""
