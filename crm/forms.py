"""Forms for the web pages: list filters, the quick contact and event forms, dashboard filters.

Forms only check input; the writes themselves go through crm.services.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from accounts.models import Team, User
from crm.models import Contact, Customer, Event, Opportunity, Person
from crm.selectors.pages import RISK_CHOICES, SORTS

# A contact or event may be logged a little ahead (time zones, a meeting about to start), not days ahead.
FUTURE_TOLERANCE = timedelta(hours=12)


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs=attrs, format="%Y-%m-%dT%H:%M")


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, attrs=None):
        super().__init__(attrs=attrs, format="%Y-%m-%d")


def _sort_choices():
    choices = []
    for key, label in SORTS.items():
        if key == "name":
            choices.append((key, "Name A–Z"))
            continue
        choices.append((f"-{key}", f"{label}, highest first" if key != "last_contact" else "Last contact, most recent"))
        choices.append((key, f"{label}, lowest first" if key != "last_contact" else "Last contact, longest ago"))
    return choices


class AccountFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=100,
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, city or external id"}))
    stage = forms.ChoiceField(label="Lifecycle stage", required=False,
                              choices=[("", "Any stage"), *Customer.Stage.choices])
    relationship = forms.ChoiceField(label="Relationship", required=False,
                                     choices=[("", "Any relationship"), *Customer.Relationship.choices])
    risk = forms.ChoiceField(label="Risk", required=False, choices=[("", "Any risk"), *RISK_CHOICES])
    sort = forms.ChoiceField(label="Sort by", required=False, choices=_sort_choices())
    owner = forms.ModelChoiceField(label="Owner", queryset=User.objects.none(), required=False, empty_label="Anyone")

    def __init__(self, *args, owners=None, **kwargs):
        super().__init__(*args, **kwargs)
        if owners is None:
            del self.fields["owner"]  # a salesperson only sees their own accounts
        else:
            self.fields["owner"].queryset = owners
            self.order_fields(["q", "owner"])

    def filters(self) -> dict:
        if not self.is_valid():
            return {}
        data = {k: v for k, v in self.cleaned_data.items() if v}
        if "owner" in data:
            data["owner_id"] = data.pop("owner").pk
        return data


def _not_far_future(value, field_label: str):
    if value and value > timezone.now() + FUTURE_TOLERANCE:
        raise forms.ValidationError(f"{field_label} cannot be in the future.")
    return value


class ContactQuickForm(forms.Form):
    channel = forms.ChoiceField(choices=Contact.Channel.choices, initial=Contact.Channel.CALL)
    direction = forms.ChoiceField(
        choices=[(Contact.Direction.OUTBOUND, "Outbound"), (Contact.Direction.INBOUND, "Inbound")],
        initial=Contact.Direction.OUTBOUND,
        help_text="Inbound: they came to us (request, feedback, complaint).",
    )
    subject = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"placeholder": "What was it about?"}))
    occurred_at = forms.DateTimeField(label="When", required=False, widget=DateTimeLocalInput(),
                                      help_text="Leave empty for now.")
    people = forms.ModelMultipleChoiceField(label="Who took part", queryset=Person.objects.none(), required=False)
    outcome = forms.CharField(max_length=200, required=False)
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    follow_up_on = forms.DateField(label="Follow up on", required=False, widget=DateInput())

    def __init__(self, *args, customer: Customer, **kwargs):
        # Own id prefix: the contact and event forms share a page and field names.
        kwargs.setdefault("auto_id", "contact-%s")
        super().__init__(*args, **kwargs)
        self.customer = customer
        self.fields["people"].queryset = customer.people.filter(is_active=True)
        self.fields["people"].help_text = "People of the decision-making unit (Ctrl/Cmd-click for several)."

    def clean_subject(self):
        subject = self.cleaned_data["subject"].strip()
        if not subject:
            raise forms.ValidationError("Say in a few words what the contact was about.")
        return subject

    def clean_occurred_at(self):
        return _not_far_future(self.cleaned_data.get("occurred_at"), "The contact time")

    def clean(self):
        data = super().clean()
        follow_up = data.get("follow_up_on")
        occurred = data.get("occurred_at") or timezone.now()
        if follow_up and follow_up < timezone.localdate(occurred):
            self.add_error("follow_up_on", "The follow-up date must be on or after the contact date.")
        return data


class EventQuickForm(forms.Form):
    kind = forms.ChoiceField(label="What happened", choices=Event.Kind.choices)
    impact = forms.ChoiceField(choices=Event.Impact.choices, initial=Event.Impact.NEUTRAL)
    occurred_at = forms.DateTimeField(label="When", required=False, widget=DateTimeLocalInput(),
                                      help_text="Leave empty for now.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "event-%s")
        super().__init__(*args, **kwargs)

    def clean_occurred_at(self):
        return _not_far_future(self.cleaned_data.get("occurred_at"), "The event date")


class OpportunityStatusForm(forms.Form):
    status = forms.ChoiceField(
        choices=[(s, label) for s, label in Opportunity.Status.choices if s not in ("open", "expired")]
    )


class DashboardFilterForm(forms.Form):
    team = forms.ModelChoiceField(label="Team", queryset=Team.objects.none(), required=False, empty_label="All teams")
    salesperson = forms.ModelChoiceField(label="Salesperson", queryset=User.objects.none(), required=False,
                                         empty_label="Everyone")

    def __init__(self, *args, teams, people, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams
        self.fields["salesperson"].queryset = people


class AnalyticsForm(forms.Form):
    """Inputs the analytics questions share: a product, a period and a window."""

    product = forms.ModelChoiceField(label="Product", queryset=None, required=False, empty_label="Any product")
    since = forms.DateField(label="From", required=False, widget=DateInput())
    until = forms.DateField(label="To", required=False, widget=DateInput())
    window_days = forms.IntegerField(label="Window (days)", required=False, min_value=1, max_value=3650, initial=90,
                                     help_text="Before a loss or a purchase; also “not contacted lately”.")

    def __init__(self, *args, **kwargs):
        from crm.models import Product

        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = Product.objects.order_by("family", "tier", "sku")

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end of the period must be after its start.")
        return data
