#!/usr/bin/env python
"""Run the test suite: ``python runtests.py [pytest arguments]``.

Uses SQLite in memory; set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)
to run it on another database.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.exit(pytest.main(sys.argv[1:]))
