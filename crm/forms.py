"""Forms for the web pages: list filters, the quick contact and event forms, the account, people,
holding and usage forms, dashboard filters.

Forms only check input; the writes themselves go through crm.services. Model forms validate
against a copy of the record (model validation: choices, dates from crm/dates.py, constraints
in words from crm/constraints.py) and never save it.
"""

from __future__ import annotations

import copy
import re

from django import forms
from django.utils import timezone

from accounts.models import Team, User
from crm.dates import date_error
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Usage
from crm.selectors.pages import RISK_CHOICES, SORTS


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


def _sane_date(value, model_label: str, field: str):
    """The services' date rule (crm/dates.py), checked on the form too so every error shows at once."""
    message = date_error(model_label, field, value)
    if message:
        raise forms.ValidationError(message)
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
    people = forms.ModelMultipleChoiceField(label="Who took part", queryset=Person.objects.none(), required=False,
                                            widget=forms.CheckboxSelectMultiple)
    outcome = forms.CharField(max_length=200, required=False)
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    follow_up_on = forms.DateField(label="Follow up on", required=False, widget=DateInput())

    def __init__(self, *args, customer: Customer, **kwargs):
        # Own id prefix: the contact and event forms share a page and field names.
        kwargs.setdefault("auto_id", "contact-%s")
        super().__init__(*args, **kwargs)
        self.customer = customer
        self.fields["people"].queryset = customer.people.filter(is_active=True)

    def clean_subject(self):
        subject = self.cleaned_data["subject"].strip()
        if not subject:
            raise forms.ValidationError("Say in a few words what the contact was about.")
        return subject

    def clean_occurred_at(self):
        return _sane_date(self.cleaned_data.get("occurred_at"), "crm.contact", "occurred_at")

    def clean_follow_up_on(self):
        return _sane_date(self.cleaned_data.get("follow_up_on"), "crm.contact", "follow_up_on")

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
        return _sane_date(self.cleaned_data.get("occurred_at"), "crm.event", "occurred_at")


class RecordForm(forms.ModelForm):
    """A model form that validates against a copy of the record, so the record itself stays as stored
    until a service writes the cleaned values."""

    def __init__(self, *args, instance=None, **kwargs):
        super().__init__(*args, instance=copy.copy(instance) if instance is not None else None, **kwargs)


COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


class AccountForm(RecordForm):
    """New account and Edit: the account's own fields; the owner only for managers and admins on create."""

    owner = forms.ModelChoiceField(label="Owner", queryset=User.objects.none(), required=True,
                                   help_text="The salesperson who keeps this account.")

    class Meta:
        model = Customer
        fields = ["name", "kind", "relationship_type", "lifecycle_stage", "email", "phone", "website", "address",
                  "city", "country", "notes", "external_id"]
        labels = {"kind": "Company or individual", "relationship_type": "Relationship", "external_id": "External id",
                  "website": "Website", "email": "E-mail"}
        help_texts = {"external_id": "Optional: the id of this account in the ERP, billing or shop.",
                      "country": "Two letters, e.g. GB, DE, FR."}
        widgets = {"notes": forms.Textarea(attrs={"rows": 3}), "email": forms.EmailInput(),
                   "phone": forms.TextInput(attrs={"type": "tel", "autocomplete": "tel"}),
                   "website": forms.TextInput(attrs={"type": "url", "placeholder": "https://"}),
                   "country": forms.TextInput(attrs={"maxlength": 2, "size": 3, "autocapitalize": "characters"})}

    def __init__(self, *args, owners=None, **kwargs):
        kwargs.setdefault("auto_id", "account-%s")
        super().__init__(*args, **kwargs)
        if owners is None:
            del self.fields["owner"]
        else:
            self.fields["owner"].queryset = owners
            self.order_fields(["name", "owner"])
        stages = Customer.Stage.choices
        if self.instance.lifecycle_stage != Customer.Stage.LOST:  # losing an account asks why: "Mark lost"
            stages = [c for c in stages if c[0] != Customer.Stage.LOST]
        self.fields["lifecycle_stage"].choices = stages

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the account a name.")
        return name

    def clean_country(self):
        country = self.cleaned_data["country"].strip().upper()
        if country and not COUNTRY_CODE.match(country):
            raise forms.ValidationError("Give the two-letter country code (ISO 3166), e.g. GB or DE.")
        return country

    def clean_website(self):
        website = self.cleaned_data["website"].strip()
        if website and "://" not in website:
            website = f"https://{website}"
            try:
                forms.URLField().clean(website)
            except forms.ValidationError:
                raise forms.ValidationError("Enter a web address, e.g. https://example.com.") from None
        return website

    def account_data(self) -> dict:
        data = dict(self.cleaned_data)
        data.pop("owner", None)
        return data


class AccountReassignForm(forms.Form):
    owner = forms.ModelChoiceField(label="New owner", queryset=User.objects.none(), empty_label="Choose…")

    def __init__(self, *args, owners, **kwargs):
        kwargs.setdefault("auto_id", "reassign-%s")
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = owners


class MarkLostForm(forms.Form):
    reason = forms.ChoiceField(label="Why was it lost?", choices=[("", "Choose a reason…"), *Customer.LostReason.choices])
    note = forms.CharField(label="In your words", max_length=300, required=False,
                           help_text="Needed when the reason is “Other”.",
                           widget=forms.TextInput(attrs={"placeholder": "What happened?"}))

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "lost-%s")
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean()
        if data.get("reason") == Customer.LostReason.OTHER and not (data.get("note") or "").strip():
            self.add_error("note", "Say in a few words why the account was lost.")
        return data


class PersonForm(RecordForm):
    class Meta:
        model = Person
        fields = ["first_name", "last_name", "job_title", "dmu_role", "email", "phone", "is_primary"]
        labels = {"dmu_role": "Role in the decision-making unit", "email": "E-mail", "is_primary": "Primary contact"}
        help_texts = {"is_primary": "The person to call first; replaces the current primary contact."}
        widgets = {"phone": forms.TextInput(attrs={"type": "tel", "autocomplete": "tel"}), "email": forms.EmailInput()}

    def __init__(self, *args, **kwargs):
        prefix_id = f"person-{kwargs['instance'].pk}-%s" if kwargs.get("instance") else "person-new-%s"
        kwargs.setdefault("auto_id", prefix_id)
        super().__init__(*args, **kwargs)

    def clean_last_name(self):
        name = self.cleaned_data["last_name"].strip()
        if not name:
            raise forms.ValidationError("Give at least the last name.")
        return name


class HoldingForm(RecordForm):
    product = forms.ModelChoiceField(queryset=Product.objects.none(), empty_label="Choose a product…")

    class Meta:
        model = Holding
        fields = ["product", "quantity", "since", "until", "status"]
        labels = {"quantity": "Quantity or seats", "since": "Since", "until": "Until or renewal date"}
        help_texts = {"until": "Leave empty when it runs until cancelled."}
        widgets = {"since": DateInput(), "until": DateInput()}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "holding-%s")
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = Product.objects.filter(is_active=True).order_by("family", "tier", "sku")
        self.fields["quantity"].min_value = 0
        self.fields["quantity"].widget.attrs["min"] = 0

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            self.add_error("until", "The end or renewal date must be on or after the start date.")
        return data


class UsageForm(RecordForm):
    class Meta:
        model = Usage
        fields = ["period_start", "period_end", "used", "capacity", "satisfaction", "nps", "note"]
        labels = {"period_start": "Period from", "period_end": "Period to", "used": "Used",
                  "capacity": "Capacity", "satisfaction": "Satisfaction (1–5)", "nps": "NPS answer (0–10)"}
        help_texts = {"capacity": "Leave empty to use what the holding gives.", "used": "In the product's unit."}
        widgets = {"period_start": DateInput(), "period_end": DateInput(), "note": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, holding: Holding, **kwargs):
        kwargs.setdefault("auto_id", f"usage-{holding.pk}-%s")
        super().__init__(*args, **kwargs)
        self.holding = holding
        self.instance.holding = holding
        unit = holding.product.capacity_unit
        if unit:
            self.fields["used"].help_text = f"In {unit}."
        if holding.capacity is not None:
            self.fields["capacity"].help_text = f"Leave empty for the holding's {holding.capacity.normalize():f}."
        for name, low, high in (("used", 0, None), ("capacity", 0, None), ("satisfaction", 1, 5), ("nps", 0, 10)):
            field = self.fields[name]
            field.widget.attrs["min"] = low
            if high is not None:
                field.widget.attrs["max"] = high

    def clean(self):
        data = super().clean()
        if data.get("period_start") and data.get("period_end") and data["period_end"] < data["period_start"]:
            self.add_error("period_end", "The end of the period must be on or after its start.")
        return data


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
