"""The Webhooks page: your subscriptions (admins: everyone's), a form to add one, the delivery log."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from crm.webhooks import dispatch
from crm.webhooks.models import EVENT_TYPES, WebhookDelivery

DELIVERIES_SHOWN = 20


class SubscriptionForm(forms.Form):
    name = forms.CharField(max_length=100)
    url = forms.URLField(label="URL", max_length=500, assume_scheme="https",
                         help_text="Receives a POST with a JSON body per event.")
    event_types = forms.MultipleChoiceField(choices=[(t, t) for t in EVENT_TYPES], widget=forms.CheckboxSelectMultiple)
    value_threshold = forms.DecimalField(required=False, min_value=0, max_digits=14, decimal_places=2,
                                         help_text="For customer.value_changed: the CLV change worth a notice.")

    def clean_url(self):
        url = self.cleaned_data["url"]
        if not url.lower().startswith(("http://", "https://")):
            raise ValidationError("Give an http:// or https:// address.")
        return url


@login_required
def webhook_list(request):
    form = SubscriptionForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        try:
            subscription = dispatch.subscription_create(owner=request.user, **form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            secret = subscription.secret  # shown this once
            form = SubscriptionForm()
    subscriptions = list(dispatch.subscriptions_visible_to(request.user).order_by("name", "id"))
    for subscription in subscriptions:
        subscription.recent = list(subscription.deliveries.order_by("-id")[:DELIVERIES_SHOWN])
    status = 422 if request.method == "POST" and form.errors else 200
    return render(request, "crm/webhooks.html", {"form": form, "subscriptions": subscriptions, "secret": secret,
                                                  "current": "webhooks"}, status=status)


def _subscription(request, pk: int):
    subscription = dispatch.subscriptions_visible_to(request.user).filter(pk=pk).first()
    if subscription is None:
        raise Http404
    return subscription


@login_required
@require_POST
def webhook_toggle(request, pk: int):
    subscription = _subscription(request, pk)
    dispatch.subscription_update(subscription=subscription, data={"is_active": not subscription.is_active})
    messages.success(request, f"“{subscription.name}” is {'on' if subscription.is_active else 'off'}.")
    return redirect("crm:webhooks")


@login_required
@require_POST
def webhook_delete(request, pk: int):
    subscription = _subscription(request, pk)
    subscription.delete()
    messages.success(request, f"“{subscription.name}” was deleted.")
    return redirect("crm:webhooks")


@login_required
@require_POST
def webhook_redeliver(request, pk: int, delivery_id: int):
    subscription = _subscription(request, pk)
    delivery = WebhookDelivery.objects.filter(pk=delivery_id, subscription=subscription).first()
    if delivery is None:
        raise Http404
    dispatch.delivery_redeliver(delivery=delivery)
    messages.success(request, f"Event {delivery.event_id} sent again.")
    return redirect("crm:webhooks")
