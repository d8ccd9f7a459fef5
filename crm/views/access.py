"""Who may open which page: salesperson pages need a login, manager pages the manager or admin role."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def is_manager_or_admin(user) -> bool:
    return user.is_authenticated and (user.is_superuser or user.role in ("manager", "admin"))


def manager_required(view):
    """Logged-in managers and admins only; anyone else gets the 403 page."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not is_manager_or_admin(request.user):
            raise PermissionDenied("This page is for managers and admins.")
        return view(request, *args, **kwargs)

    return wrapped
