"""After a successful write request, ask for a webhook dispatch (the beat schedule is the backstop)."""

from __future__ import annotations

from crm.webhooks.dispatch import kick

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class WebhookKickMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method in WRITE_METHODS and response.status_code < 400:
            kick()  # the request's writes have committed (no ATOMIC_REQUESTS)
        return response
