"""The database constraints of the CRM models in words: which field each one concerns and what to say.

Model validation (`full_clean`, which the services and the admin's forms run) reports a
violated constraint with these messages beside the field, instead of Django's
"Constraint “usage_nps_range” is violated.". An IntegrityError the database raises for one
of them (a write that raced past validation) is turned into the same message by
`integrity_error_messages`.
"""

from __future__ import annotations

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, router

# constraint name -> (field the message goes beside, message)
CONSTRAINT_MESSAGES: dict[str, tuple[str, str]] = {
    "customer_lost_after_acquired": ("lost_on", "The lost date must be on or after the date the customer was acquired."),
    "customer_kind_valid": ("kind", "Choose company or individual."),
    "customer_relationship_valid": ("relationship_type", "Choose transactional, repeat, partner or strategic."),
    "customer_stage_valid": (
        "lifecycle_stage", "Choose prospect, acquired, developing, retained, advocate or lost.",
    ),
    "person_dmu_role_valid": (
        "dmu_role", "Choose decision maker, influencer, buyer, user or gatekeeper.",
    ),
    "person_one_primary_per_customer": ("is_primary", "This customer already has a primary contact."),
    "product_family_tier_unique": ("tier", "Another product of this family has this tier."),
    "product_list_price_nonnegative": ("list_price", "The list price cannot be negative."),
    "product_unit_cost_nonnegative": ("unit_cost", "The unit cost cannot be negative."),
    "product_tier_positive": ("tier", "The tier starts at 1."),
    "product_capacity_positive": ("capacity_per_unit", "The capacity per unit must be more than 0, or empty."),
    "purchase_quantity_positive": ("quantity", "The quantity must be more than 0."),
    "purchase_unit_price_nonnegative": ("unit_price", "The unit price cannot be negative."),
    "purchase_amount_nonnegative": ("amount", "The amount cannot be negative."),
    "purchase_unit_cost_nonnegative": ("unit_cost", "The unit cost cannot be negative."),
    "holding_quantity_nonnegative": ("quantity", "The quantity held cannot be negative."),
    "holding_until_after_since": ("until", "The end or renewal date must be on or after the start date."),
    "holding_status_valid": ("status", "Choose active, suspended, cancelled or expired."),
    "usage_one_per_holding_period": ("period_start", "Usage for a period starting on this date is already recorded."),
    "usage_used_nonnegative": ("used", "The amount used cannot be negative."),
    "usage_capacity_nonnegative": ("capacity", "The capacity cannot be negative."),
    "usage_period_end_after_start": ("period_end", "The end of the period must be on or after its start."),
    "usage_satisfaction_range": ("satisfaction", "Satisfaction goes from 1 (poor) to 5 (excellent)."),
    "usage_nps_range": ("nps", "The NPS answer goes from 0 to 10."),
    "contact_channel_valid": ("channel", "Choose call, email, meeting, visit or chat."),
    "contact_direction_valid": ("direction", "Choose outbound or inbound."),
    "event_kind_valid": ("kind", "Choose what happened from the list."),
    "event_impact_valid": ("impact", "Choose positive, neutral or negative."),
    "opportunity_one_per_suggestion": ("product", "This customer already has this suggestion."),
    "opportunity_score_nonnegative": ("score", "The score cannot be negative."),
    "opportunity_value_nonnegative": ("expected_value", "The expected value cannot be negative."),
    "opportunity_kind_valid": ("kind", "Choose cross-sell or up-sell."),
    "opportunity_status_valid": ("status", "Choose open, accepted, dismissed, won, lost or expired."),
}


def validate_worded_constraints(instance, exclude=None) -> None:
    """Model.validate_constraints, with each known constraint's message put beside its field."""
    exclude = set(exclude or ())
    using = router.db_for_write(type(instance), instance=instance)
    errors: dict[str, list] = {}
    for model_class, constraints in instance.get_constraints():
        for constraint in constraints:
            try:
                constraint.validate(model_class, instance, exclude=exclude, using=using)
            except ValidationError as exc:
                worded = CONSTRAINT_MESSAGES.get(constraint.name)
                if worded is None:
                    fields = getattr(constraint, "fields", ())
                    if getattr(exc, "code", None) == "unique" and len(fields) == 1:
                        errors.setdefault(fields[0], []).append(exc)
                    else:
                        errors = exc.update_error_dict(errors)
                    continue
                field, message = worded
                key = field if field not in exclude else NON_FIELD_ERRORS
                errors.setdefault(key, []).append(ValidationError(message, code=constraint.name))
    if errors:
        raise ValidationError(errors)


def integrity_error_messages(exc: IntegrityError) -> dict[str, list[str]] | None:
    """{field: [message]} for an IntegrityError raised by one of the constraints above, else None."""
    text = str(exc)
    for name, (field, message) in CONSTRAINT_MESSAGES.items():
        if name in text:
            return {field: [message]}
    return None
