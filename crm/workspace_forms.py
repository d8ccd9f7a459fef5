"""Forms of the salesperson's workspace: tasks, their filters, and the opportunities page.

Forms only check input; the writes go through crm.services (which check dates and rules
again, so the API and the pages agree).
"""

from __future__ import annotations

from django import forms

from accounts.models import User
from crm.forms import DateInput
from crm.models import Customer, Opportunity, Product
from crm.selectors.workspace import TASK_STATUSES


class TimeInput(forms.TimeInput):
    input_type = "time"

    def __init__(self, attrs=None):
        super().__init__(attrs=attrs, format="%H:%M")


def _user_label(user: User) -> str:
    return user.get_full_name() or user.username


class AssigneeField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return _user_label(obj)


class TaskForm(forms.Form):
    """A standalone task on one of the user's accounts."""

    customer = forms.ModelChoiceField(label="Account", queryset=Customer.objects.none(), empty_label=None)
    title = forms.CharField(label="What to do", max_length=200,
                            widget=forms.TextInput(attrs={"placeholder": "Call Anna about the renewal"}))
    due_on = forms.DateField(label="Due on", widget=DateInput())
    due_time = forms.TimeField(label="Time", required=False, widget=TimeInput(), help_text="Optional.")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    assigned_to = AssigneeField(label="Assigned to", queryset=User.objects.none(), required=False,
                                empty_label=None)

    def __init__(self, *args, customers, assignees=None, **kwargs):
        kwargs.setdefault("auto_id", "task-%s")
        super().__init__(*args, **kwargs)
        self.fields["customer"].queryset = customers
        if assignees is None:
            del self.fields["assigned_to"]
        else:
            self.fields["assigned_to"].queryset = assignees

    def clean_title(self):
        title = self.cleaned_data["title"].strip()
        if not title:
            raise forms.ValidationError("Say in a few words what is to be done.")
        return title


class TaskCompleteForm(forms.Form):
    outcome = forms.CharField(label="Outcome", max_length=300, required=False)


class TaskSnoozeForm(forms.Form):
    until = forms.ChoiceField(choices=[("tomorrow", "Tomorrow"), ("next_week", "Next week"), ("date", "On a date")])
    on = forms.DateField(label="Date", required=False, widget=DateInput())

    def clean(self):
        data = super().clean()
        if data.get("until") == "date" and not data.get("on"):
            self.add_error("on", "Choose the date to snooze to.")
        return data


class TaskReassignForm(forms.Form):
    assignee = AssigneeField(label="Reassign to", queryset=User.objects.none(), empty_label=None)

    def __init__(self, *args, assignees, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = assignees


class TaskFilterForm(forms.Form):
    status = forms.ChoiceField(label="Status", required=False, choices=TASK_STATUSES)
    due_from = forms.DateField(label="Due from", required=False, widget=DateInput())
    due_to = forms.DateField(label="Due to", required=False, widget=DateInput())
    customer = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput())
    assignee = AssigneeField(label="Salesperson", queryset=User.objects.none(), required=False,
                             empty_label="Everyone")

    def __init__(self, *args, assignees=None, **kwargs):
        super().__init__(*args, **kwargs)
        if assignees is None:
            del self.fields["assignee"]
        else:
            self.fields["assignee"].queryset = assignees

    def clean(self):
        data = super().clean()
        if data.get("due_from") and data.get("due_to") and data["due_from"] > data["due_to"]:
            self.add_error("due_to", "The end of the range must be on or after its start.")
        return data

    def filters(self) -> dict:
        if not self.is_valid():
            return {"status": "open"}
        data = self.cleaned_data
        return {
            "status": data.get("status") or "open",
            "due_from": data.get("due_from"),
            "due_to": data.get("due_to"),
            "customer_id": data.get("customer"),
            "assignee_id": data["assignee"].pk if data.get("assignee") else None,
        }


class OpportunityFilterForm(forms.Form):
    kind = forms.ChoiceField(label="Kind", required=False, choices=[("", "Any kind"), *Opportunity.Kind.choices])
    product = forms.ModelChoiceField(label="Product", queryset=Product.objects.none(), required=False,
                                     empty_label="Any product")
    status = forms.ChoiceField(
        label="Status", required=False,
        choices=[("", "Open and accepted"), *[c for c in Opportunity.Status.choices if c[0] != "expired"]],
    )
    customer = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = Product.objects.order_by("family", "tier", "sku")

    def filters(self) -> dict:
        if not self.is_valid():
            return {}
        data = self.cleaned_data
        return {
            "kind": data.get("kind") or "",
            "product_id": data["product"].pk if data.get("product") else None,
            "status": data.get("status") or "",
            "customer_id": data.get("customer"),
        }


class OpportunityActionForm(forms.Form):
    status = forms.ChoiceField(choices=[c for c in Opportunity.Status.choices if c[0] != "expired"])
    dismiss_reason = forms.ChoiceField(label="Reason", required=False,
                                       choices=[("", "—"), *Opportunity.DismissReason.choices])
    dismiss_note = forms.CharField(label="In your words", required=False, max_length=300)
    undo = forms.BooleanField(required=False)

    def clean(self):
        data = super().clean()
        if data.get("status") == "dismissed" and not data.get("undo"):
            if not data.get("dismiss_reason"):
                self.add_error("dismiss_reason", "Choose why you dismiss it.")
            elif data["dismiss_reason"] == "other" and not (data.get("dismiss_note") or "").strip():
                self.add_error("dismiss_note", "Say in a few words why it is dismissed.")
        return data
