"""The webhooks this app sends, and the data each one carries."""

from djwebhooks.decorators import hook


def project_payload(project):
    """Return what every project event says about ``project``."""
    return {
        "slug": project.slug,
        "title": project.title,
        "description": project.description,
        "updated": project.updated,  # dj-webhooks turns datetimes into ISO 8601 strings
    }


@hook(event="project.update")
def send_project_update(project, owner, identifier):
    """Send ``project.update`` to ``owner``'s targets subscribed to ``identifier``."""
    # @hook takes owner (whose targets receive it) and identifier (which of their
    # subscriptions) from the call; this function only builds the payload.
    return project_payload(project)
