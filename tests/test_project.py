"""Project-level promises: migrations committed, docs that match the code, README commands."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from djwebhooks import checks, conf

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_migrations_are_committed():
    out = StringIO()
    call_command("makemigrations", "djwebhooks", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_every_setting_is_documented_and_no_other():
    text = (ROOT / "docs" / "settings.rst").read_text()
    titles = re.findall(r"^``([A-Z_]+)``\n[-=~^\"]{4,}$", text, flags=re.MULTILINE)
    assert sorted(titles) == sorted(conf.DEFAULTS)


def test_every_check_id_is_documented():
    documented = set(re.findall(r"djwebhooks\.[EW]\d{3}", (ROOT / "docs" / "checks.rst")
                                .read_text()))
    in_code = set(re.findall(r"djwebhooks\.[EW]\d{3}", Path(checks.__file__).read_text()))
    assert in_code
    assert documented == in_code


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.rst").read_text()
    blocks = re.findall(r"^\.\. code-block:: (?:console|bash)\n\n((?:    .+\n)+)", readme,
                        flags=re.MULTILINE)
    commands = [line.strip().lstrip("$ ") for block in blocks[:2] for line in block.splitlines()]
    assert commands == [
        'pip install -e . && python example_project/manage.py webhooks_demo',
        'pip install -e ".[dev]" && python runtests.py',
    ]
