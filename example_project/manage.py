#!/usr/bin/env python
"""Django's command-line utility for the dj-webhooks example project."""

import os
import sys
from pathlib import Path


def main():
    """Run a management command with the example project's settings."""
    # The project's packages (example, projects) live beside this file; putting its folder
    # on the path lets ``python example_project/manage.py`` work from any directory.
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
