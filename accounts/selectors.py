"""Who may see which customer: the one rule every page, export, sync feed and API view uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Q

if TYPE_CHECKING:
    from accounts.models import User


def customer_visibility_q(user: User, customer_path: str = "") -> Q:
    """A filter for rows whose customer `user` may see.

    `customer_path` is the lookup from the filtered model to Customer ("" for Customer
    itself, "customer__" for a facet, "holding__customer__" for usage).

    - admin (role or superuser): every customer;
    - manager: customers owned by salespeople of the teams they manage, and their own;
    - salesperson: their own customers.
    Anonymous or inactive users see nothing.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Q(pk__in=[])
    if user.sees_everything:
        return Q()
    own = Q(**{f"{customer_path}owner": user})
    if user.is_manager:
        return own | Q(**{f"{customer_path}owner__team__manager": user})
    return own


def deletion_visibility_q(user: User) -> Q:
    """A filter for deletion-log rows (crm.Tombstone) `user` may learn of: the same rule as
    customer_visibility_q, applied to the owner and team as they were when the record went.

    A manager sees the deletions of the teams they manage now, as recorded at deletion time,
    so a salesperson changing team later takes none of them to the new team's manager.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Q(pk__in=[])
    if user.sees_everything:
        return Q()
    own = Q(owner=user)
    if user.is_manager:
        from accounts.models import Team

        return own | Q(team_id__in=Team.objects.filter(manager=user).values("pk"))
    return own


def visible_customers(user: User):
    """The customers `user` may see, as a queryset to refine further."""
    from crm.models import Customer

    return Customer.objects.filter(customer_visibility_q(user))


def can_see_customer(user: User, customer_id: int) -> bool:
    return visible_customers(user).filter(pk=customer_id).exists()


def visible_owner_ids(user: User) -> list[int] | None:
    """The owners whose customers `user` may see, resolved to ids (None: every customer, owned or not).

    The same rule as customer_visibility_q, for pages that filter big tables by owner: a short
    literal list of ids gives the planner a row estimate it can trust, where the equivalent
    subquery is misestimated by orders of magnitude.
    """
    from accounts.models import User as UserModel

    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return []
    if user.sees_everything:
        return None
    if user.is_manager:
        return sorted({user.pk, *UserModel.objects.filter(team__manager=user).values_list("pk", flat=True)})
    return [user.pk]
