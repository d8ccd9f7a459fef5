"""Personal-data requests from Account 360's people list (admins): download what is held about a
person as JSON, and erase them after a confirmation page. The work is crm/privacy.py's."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from crm import privacy
from crm.models import Contact, Person


def _person_for_admin(request, pk: int) -> Person:
    if not privacy.may_handle_personal_data(request.user):
        raise PermissionDenied("Only admins handle personal-data requests.")
    return get_object_or_404(Person.objects.select_related("customer"), pk=pk)


@login_required
@require_GET
def person_personal_data(request, pk: int):
    person = _person_for_admin(request, pk)
    data = privacy.person_personal_data(person=person, requested_by=request.user)
    response = HttpResponse(json.dumps(data, cls=DjangoJSONEncoder, indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="person-{person.pk}-personal-data.json"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def person_erase(request, pk: int):
    person = _person_for_admin(request, pk)
    error = None
    if request.method == "POST":
        if request.POST.get("confirm") == "erase":
            result = privacy.person_erase(person=person, erased_by=request.user)
            messages.success(request, "Already erased; nothing more to do." if result["already_erased"] else
                             "Personal data erased: the person is anonymised, their contacts stay.")
            return redirect(reverse("crm:account_detail", args=[person.customer_id]) + "#dmu")
        error = "Tick the box to confirm the erasure."
    context = {
        "person": person,
        "customer": person.customer,
        "contacts": Contact.objects.filter(people=person).count(),
        "error": error,
    }
    return render(request, "crm/person_erase.html", context, status=400 if error else 200)
