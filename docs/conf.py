"""Sphinx configuration for the dj-webhooks documentation."""

import os
import sys
from pathlib import Path

# The repository root, so that autodoc can import djwebhooks and the test settings.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import djwebhooks  # noqa: E402

project = "dj-webhooks"
author = "dj-webhooks contributors"
copyright = "2014, Daniel Greenfeld; dj-webhooks contributors"
version = djwebhooks.__version__
release = djwebhooks.__version__

extensions = ["sphinx.ext.autodoc"]

autodoc_member_order = "bysource"
autodoc_typehints = "none"
# Keep API objects out of the tables of contents; sections are enough.
toc_object_entries = False
nitpicky = False

exclude_patterns = ["_build"]
templates_path = []

html_theme = "furo"
html_title = f"dj-webhooks {release}"
