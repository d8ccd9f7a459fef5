"""Where a request comes from, and what a locked-out login is answered.

One rule for the client's address, used by the API's rate limits and by the login lockout
(django-axes): with NUM_PROXIES = 0 (the default) X-Forwarded-For is ignored and the
connection's address is the client's; with n trusted proxies in front, the n-th address from
the right of X-Forwarded-For is (what a client writes to the left of it is never trusted).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def client_address(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "") or ""
    proxies = getattr(settings, "NUM_PROXIES", 0) or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies <= 0 or not forwarded:
        return remote
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-min(proxies, len(hops))] if hops else remote


def cool_off_seconds() -> int:
    return int(float(settings.AXES_COOLOFF_TIME or 0) * 3600)


LOCKED_MESSAGE = "Too many failed logins for this user name or from this address; try again in {minutes} minutes."


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """429 with Retry-After: problem details on the API, the login page with a message elsewhere."""
    from crm.api.problems import PROBLEM_CONTENT_TYPE, problem

    seconds = cool_off_seconds()
    message = LOCKED_MESSAGE.format(minutes=max(1, round(seconds / 60)))
    if request.path.startswith("/api/"):
        body = problem(429, detail=message, code="login_locked", instance=request.path)
        body["retry_after"] = seconds
        response = JsonResponse(body, status=429, content_type=PROBLEM_CONTENT_TYPE)
    else:
        from django.contrib.auth.forms import AuthenticationForm

        form = AuthenticationForm(request, data=None)
        response = render(request, "registration/login.html", {"form": form, "locked_message": message}, status=429)
    response["Retry-After"] = str(seconds)
    return response
