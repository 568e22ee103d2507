"""``WebhookTargetForm``: a target form whose event is picked from the declared events."""

from django import forms
from django.db import models
from django.utils.translation import gettext_lazy as _

from djwebhooks import conf
from djwebhooks.models import WebhookTarget, validate_event_name


def formfield(field, **kwargs):
    """Build form fields, with ``https`` assumed for URLs typed without a scheme."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class WebhookTargetForm(forms.ModelForm):
    """Create or edit a ``WebhookTarget``; used by the admin, usable in your own views."""

    class Meta:
        model = WebhookTarget
        fields = ["owner", "event", "identifier", "target_url", "header_content_type",
                  "is_active"]
        formfield_callback = formfield

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        events = conf.get_events()
        choices = [(name, f"{name} — {text}" if text else name) for name, text in events.items()]
        current = self.instance.event if self.instance.pk else None
        if current and current not in events:
            # Keep an event that has since been undeclared visible, so the form says why
            # it no longer validates instead of silently changing it.
            choices.insert(0, (current, current))
        self.fields["event"] = forms.ChoiceField(
            label=_("event"),
            choices=[("", "---------"), *choices],
            validators=[validate_event_name],
            help_text=_("One of the events declared in DJWEBHOOKS['EVENTS']."),
        )
