"""``WebhookTargetForm``: a target form whose event is picked from the declared events;
and the fields for a target's own headers, timeout, retry schedule, ordering, most requests
at once and rate limit, which the owners' forms use too."""

from django import forms
from django.db import models
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from djwebhooks import conf, options
from djwebhooks.models import WebhookTarget, validate_event_name


class HeadersField(forms.Field):
    """A target's headers, typed one per line as ``Name: value`` (or given as a dict, by
    the API). Stored values are shown masked; a masked value left as it is keeps the
    stored one (see ``TargetOptionsForm``)."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off",
                                   "placeholder": "Authorization: Bearer ..."})

    def prepare_value(self, value):
        if isinstance(value, dict):
            return options.format_headers(options.masked(value))
        return value

    def to_python(self, value):
        if value in self.empty_values or value == {}:
            return {}
        if isinstance(value, dict):
            return value
        if not isinstance(value, str):
            raise forms.ValidationError(_("Give the headers as an object of names to "
                                          "values."), code="invalid")
        try:
            return options.parse_headers(value)
        except options.OptionError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None


class ScheduleField(forms.Field):
    """A retry schedule, typed as ``5s, 5m, 30m, 2h`` (``none``: no retries; blank: the
    sender's schedule), or given as a list of seconds (the API)."""

    widget = forms.TextInput(attrs={"spellcheck": "false", "placeholder": "5s, 5m, 30m, 2h"})

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            try:
                return options.format_schedule(options.check_schedule(value)) or "none"
            except options.OptionError:
                return str(value)
        return value

    def to_python(self, value):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            if isinstance(value, str):
                waits = [] if value.strip().lower() == "none" else \
                    options.parse_schedule(value)
            else:
                waits = options.check_schedule(value)
        except options.OptionError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None
        return [int(wait) if wait.is_integer() else wait for wait in waits]


def whole_number(most, blank):
    """The messages of a field that takes a whole number from 1 to ``most``, or nothing for
    ``blank``."""
    message = format_lazy(_("Give a whole number from 1 to {most}, or leave it blank for "
                            "{blank}."), most=most, blank=blank)
    return {"invalid": message, "min_value": message, "max_value": message}


class TargetOptionsForm(forms.ModelForm):
    """The fields for a target's own options, shared by the admin's and the owners' forms."""

    headers = HeadersField(
        label=_("headers"), required=False,
        help_text=_("Sent with every request, one per line as Name: value, such as "
                    "Authorization: Bearer .... Values are shown masked: leave a masked "
                    "value as it is to keep it."))
    timeout = forms.FloatField(
        label=_("timeout"), required=False, min_value=options.SHORTEST_TIMEOUT,
        help_text=_("Seconds a request may take, from looking up the host to the last byte "
                    "of the answer. Blank: the sender's own limit."))
    retry_schedule = ScheduleField(
        label=_("retry schedule"), required=False,
        help_text=_("Waits before each retry, such as 5s, 5m, 30m, 2h, 1d; none for no "
                    "retries. Blank: the sender's schedule."))
    ordered = forms.BooleanField(
        label=_("ordered"), required=False,
        help_text=_("Send its deliveries one at a time, in the order they were created: "
                    "one that fails holds back those after it until it succeeds, fails "
                    "for good or is skipped."))
    max_in_flight = forms.IntegerField(
        label=_("most requests at once"), required=False, min_value=1,
        max_value=options.MAX_IN_FLIGHT,
        error_messages=whole_number(options.MAX_IN_FLIGHT, _("the sender's default")),
        help_text=_("The most requests each sending process makes to it at once; fewer "
                    "while it answers 429, 502, 503 or 504 or times out. Blank: the "
                    "sender's default."))
    rate_limit = forms.IntegerField(
        label=_("rate limit"), required=False, min_value=1,
        max_value=options.MAX_RATE_LIMIT,
        error_messages=whole_number(options.MAX_RATE_LIMIT, _("no limit")),
        help_text=_("The most requests a second, counted across every worker. Blank: no "
                    "limit."))

    def clean_headers(self):
        stored = self.instance.headers if self.instance.pk else {}
        try:
            return options.check_headers(options.unmask(self.cleaned_data["headers"], stored))
        except options.OptionError as exc:
            raise forms.ValidationError(str(exc), code="invalid_headers") from None


def formfield(field, **kwargs):
    """Build form fields, with ``https`` assumed for URLs typed without a scheme."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class WebhookTargetForm(TargetOptionsForm):
    """Create or edit a ``WebhookTarget``; used by the admin, usable in your own views."""

    class Meta:
        model = WebhookTarget
        fields = ["owner", "event", "identifier", "target_url", "header_content_type",
                  "is_active", "headers", "timeout", "retry_schedule", "ordered",
                  "max_in_flight", "rate_limit"]
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
