"""The filters of the deliveries page: by target, status, event and day."""

from django import forms
from django.utils.translation import gettext_lazy as _

from djwebhooks import conf
from djwebhooks.models import Delivery


class DateInput(forms.DateInput):
    """A browser date picker; the value is sent as YYYY-MM-DD."""

    input_type = "date"


class DeliveryFilterForm(forms.Form):
    """What the deliveries page lists: every field is optional, the days are inclusive."""

    target = forms.ModelChoiceField(label=_("Webhook"), queryset=None, required=False,
                                    empty_label=_("Any webhook"))
    status = forms.ChoiceField(label=_("Status"), required=False)
    event = forms.ChoiceField(label=_("Event"), required=False)
    date_from = forms.DateField(label=_("From"), required=False, widget=DateInput)
    date_to = forms.DateField(label=_("To"), required=False, widget=DateInput)

    def __init__(self, *args, targets, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = targets
        self.fields["target"].label_from_instance = lambda target: target.target_url
        self.fields["status"].choices = [("", _("Any status")), *Delivery.Status.choices]
        self.fields["event"].choices = [("", _("Any event")),
                                        *((name, name) for name in conf.get_events())]

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("This day is before the day in From."))
        return data

    def filter(self, deliveries):
        """``deliveries`` narrowed to what the (valid) form asks for."""
        data = self.cleaned_data
        if data.get("target"):
            deliveries = deliveries.filter(webhook_target=data["target"])
        if data.get("status"):
            deliveries = deliveries.filter(status=data["status"])
        if data.get("event"):
            deliveries = deliveries.filter(event=data["event"])
        if data.get("date_from"):
            deliveries = deliveries.filter(created__date__gte=data["date_from"])
        if data.get("date_to"):
            deliveries = deliveries.filter(created__date__lte=data["date_to"])
        return deliveries
