"""What an owner may set on a target, from the pages and the API alike."""

from django import forms
from django.utils.translation import gettext_lazy as _

from djwebhooks import conf
from djwebhooks.forms import TargetOptionsForm, formfield
from djwebhooks.models import WebhookTarget

#: The fields an owner sets; the API takes exactly these (and no others).
FIELDS = ["event", "identifier", "target_url", "header_content_type", "is_active",
          "headers", "timeout", "retry_schedule", "ordered", "max_in_flight", "rate_limit"]


class OwnerTargetForm(TargetOptionsForm):
    """Add or edit one of ``owner``'s targets: the event is one of the declared ones (shown
    with its description), the URL is checked with the sender's own rules (public address,
    ``HTTPS_ONLY``, ``ALLOWED_PORTS``), and a second subscription of the same event,
    identifier and URL is refused."""

    class Meta:
        model = WebhookTarget
        fields = FIELDS
        formfield_callback = formfield
        help_texts = {
            "target_url": _("Where the webhook is sent: an https:// URL on a public "
                            "address."),
            "is_active": _("Untick to stop sending to this URL without deleting it."),
        }

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = self.instance.owner = owner
        events = conf.get_events()
        choices = [(name, f"{name} — {text}" if text else name) for name, text in events.items()]
        current = self.instance.event if self.instance.pk else None
        if current and current not in events:
            choices.insert(0, (current, current))
        self.fields["event"] = forms.ChoiceField(
            label=_("event"), choices=[("", _("Choose an event")), *choices],
            help_text=_("What happens on the site that sends this webhook."))
        self.descriptions = events

    def clean(self):
        data = super().clean()
        same = WebhookTarget.objects.filter(
            owner=self.owner, event=data.get("event"), identifier=data.get("identifier", ""),
            target_url=data.get("target_url"))
        if self.instance.pk:
            same = same.exclude(pk=self.instance.pk)
        if data.get("event") and data.get("target_url") and same.exists():
            # Beside the URL, the field a person most often mistypes into a duplicate.
            self.add_error("target_url", forms.ValidationError(
                _("You already have a webhook for this event, identifier and URL."),
                code="duplicate"))
        return data
