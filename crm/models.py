"""Customers, the people of their decision-making unit, products, the four lifetime facets
(purchases and holdings, usage, contacts, events) and the opportunities drawn from them.

Every model a client can sync carries `external_id` (unique when set), `created_at` and
`updated_at`. Deletions are kept in a deletion log (`Tombstone`), written by the services
in the same transaction as the delete, so a syncing client learns about them later.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from accounts.selectors import customer_visibility_q


class SyncedModel(models.Model):
    external_id = models.CharField(
        max_length=100,
        unique=True,
        null=True,
        blank=True,
        help_text="The identifier of this record in the client system that syncs it (ERP, billing, shop).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # The record's place in the change feed, set by a database trigger on every insert and
    # update (whatever the write path): the writing transaction's id and a global sequence
    # number (even for an insert, odd for an update). See crm/sync.py.
    change_txid = models.BigIntegerField(default=0, editable=False)
    change_seq = models.BigIntegerField(default=0, editable=False)

    class Meta:
        abstract = True

    def validate_constraints(self, exclude=None):
        # Violations in words beside the field (crm/constraints.py), not the constraint's name.
        from crm.constraints import validate_worded_constraints

        validate_worded_constraints(self, exclude=exclude)

    def clean_fields(self, exclude=None):
        # Dates a person or client entered must make sense (crm/dates.py): one rule for every write path.
        from crm.dates import record_date_errors

        errors: dict = {}
        try:
            super().clean_fields(exclude=exclude)
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        for field, messages in record_date_errors(self).items():
            if field not in errors and field not in (exclude or ()):
                errors[field] = messages
        if errors:
            raise ValidationError(errors)


def change_position_index() -> models.Index:
    """The index the change feed reads in order: one per synced table."""
    return models.Index(fields=["change_txid", "change_seq"], name="%(class)s_change_pos")


class VisibleQuerySet(models.QuerySet):
    """A queryset that knows the path from its model to Customer, for the visibility rule."""

    customer_path = "customer__"

    def visible_to(self, user):
        return self.filter(customer_visibility_q(user, self.customer_path))


class UsageQuerySet(VisibleQuerySet):
    customer_path = "holding__customer__"


class CustomerQuerySet(VisibleQuerySet):
    customer_path = ""

    def active(self):
        return self.exclude(lifecycle_stage=Customer.Stage.LOST)

    def for_owner(self, user):
        return self.filter(owner=user)


class Customer(SyncedModel):
    class Kind(models.TextChoices):
        COMPANY = "company", "Company"
        INDIVIDUAL = "individual", "Individual"

    class Relationship(models.TextChoices):
        TRANSACTIONAL = "transactional", "Transactional"
        REPEAT = "repeat", "Repeat"
        PARTNER = "partner", "Partner"
        STRATEGIC = "strategic", "Strategic"

    class Stage(models.TextChoices):
        PROSPECT = "prospect", "Prospect"
        ACQUIRED = "acquired", "Acquired"
        DEVELOPING = "developing", "Developing"
        RETAINED = "retained", "Retained"
        ADVOCATE = "advocate", "Advocate"
        LOST = "lost", "Lost"

    class LostReason(models.TextChoices):
        PRICE = "price", "Price"
        COMPETITOR = "competitor", "Went to a competitor"
        NO_NEED = "no_need", "No longer needs it"
        NO_BUDGET = "no_budget", "No budget"
        SERVICE = "service", "Unhappy with product or service"
        UNRESPONSIVE = "unresponsive", "Stopped responding"
        OTHER = "other", "Other"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.COMPANY)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="customers",
        help_text="The salesperson who owns the account.",
    )
    relationship_type = models.CharField(max_length=20, choices=Relationship.choices, default=Relationship.TRANSACTIONAL)
    lifecycle_stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.PROSPECT)
    acquired_on = models.DateField(null=True, blank=True, help_text="When the customer first bought.")
    lost_on = models.DateField(null=True, blank=True, help_text="When the customer was marked lost.")
    lost_reason = models.CharField(
        max_length=20, choices=LostReason.choices, blank=True, default="", db_default="",
        help_text="Why the customer was lost (set when marked lost).",
    )
    lost_note = models.CharField(
        max_length=300, blank=True, default="", db_default="", help_text="The reason in the salesperson's words."
    )
    industry = models.CharField(max_length=100, blank=True)
    address = models.CharField(
        max_length=300, blank=True, default="", db_default="", help_text="Street and number, postcode."
    )
    city = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2 code.")
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    website = models.URLField(blank=True)
    notes = models.TextField(blank=True)

    objects = CustomerQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["owner", "lifecycle_stage"], name="customer_owner_stage_idx"),
            models.Index(fields=["lifecycle_stage", "relationship_type"], name="customer_stage_rel_idx"),
            models.Index(fields=["name"], name="customer_name_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(lost_on__isnull=True) | Q(acquired_on__isnull=True) | Q(lost_on__gte=models.F("acquired_on")),
                name="customer_lost_after_acquired",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["company", "individual"]), name="customer_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(relationship_type__in=["transactional", "repeat", "partner", "strategic"]),
                name="customer_relationship_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    lifecycle_stage__in=["prospect", "acquired", "developing", "retained", "advocate", "lost"]
                ),
                name="customer_stage_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Person(SyncedModel):
    """A member of the customer's decision-making unit."""

    class DmuRole(models.TextChoices):
        DECISION_MAKER = "decision_maker", "Decision maker"
        INFLUENCER = "influencer", "Influencer"
        BUYER = "buyer", "Buyer"
        USER = "user", "User"
        GATEKEEPER = "gatekeeper", "Gatekeeper"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="people")
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100)
    job_title = models.CharField(max_length=120, blank=True)
    dmu_role = models.CharField(
        "role in the decision-making unit", max_length=20, choices=DmuRole.choices, default=DmuRole.USER
    )
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    is_active = models.BooleanField(default=True, help_text="Still with the customer.")
    is_primary = models.BooleanField(
        "primary contact", default=False, db_default=False,
        help_text="The person to call first; at most one per customer.",
    )
    erased_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When the person's personal data was erased on request (crm/privacy.py); the row stays, "
                  "anonymised, so the contacts they took part in keep their facts.",
    )

    objects = VisibleQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "people"
        ordering = ["last_name", "first_name", "id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["customer", "dmu_role"], name="person_customer_role_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(dmu_role__in=["decision_maker", "influencer", "buyer", "user", "gatekeeper"]),
                name="person_dmu_role_valid",
            ),
            models.UniqueConstraint(
                fields=["customer"], condition=Q(is_primary=True), name="person_one_primary_per_customer",
                violation_error_message="This customer already has a primary contact.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Product(SyncedModel):
    """A catalogue item. Products of one family are ordered by tier: the next tier is the up-sell.

    A product with a renewal period is a subscription: its holdings are contracts that renew (or
    not) at the end of every period, valued by the contractual CLV models (clv.contracts).
    """

    class RenewalPeriod(models.TextChoices):
        NONE = "", "Not a subscription"
        MONTH = "month", "Monthly"
        QUARTER = "quarter", "Quarterly"
        YEAR = "year", "Yearly"

    PERIOD_MONTHS = {"month": 1, "quarter": 3, "year": 12}

    sku = models.CharField("SKU", max_length=64, unique=True)
    name = models.CharField(max_length=200)
    family = models.CharField(max_length=100, help_text="Products of a family form an up-sell path by tier.")
    category = models.CharField(
        max_length=100, blank=True, default="",
        help_text="A group of families a salesperson talks about (\"Security\", \"Dairy\"); with a large "
        "catalogue, cross-sell from purchases is computed per category and suggests its most bought product.",
    )
    tier = models.PositiveSmallIntegerField(default=1, help_text="1 is the entry tier; higher is richer.")
    list_price = models.DecimalField(max_digits=12, decimal_places=2)
    unit_cost = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    capacity_unit = models.CharField(
        max_length=30, blank=True, help_text='What the product\'s capacity counts ("seats", "GB"), if it has one.'
    )
    capacity_per_unit = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Capacity that one unit held gives (e.g. 50 seats per licence).",
    )
    is_active = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    renewal_period = models.CharField(
        max_length=10, choices=RenewalPeriod.choices, default=RenewalPeriod.NONE, blank=True,
        help_text="Set for a subscription: how often a holding of it renews.",
    )
    period_price = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True,
        help_text="Price per renewal period and unit held (subscriptions only; required for them).",
    )

    class Meta:
        ordering = ["family", "tier", "sku"]
        indexes = [change_position_index()]
        constraints = [
            models.UniqueConstraint(fields=["family", "tier"], name="product_family_tier_unique"),
            models.CheckConstraint(condition=Q(list_price__gte=0), name="product_list_price_nonnegative"),
            models.CheckConstraint(condition=Q(unit_cost__gte=0), name="product_unit_cost_nonnegative"),
            models.CheckConstraint(condition=Q(tier__gte=1), name="product_tier_positive"),
            models.CheckConstraint(
                condition=Q(capacity_per_unit__isnull=True) | Q(capacity_per_unit__gt=0),
                name="product_capacity_positive",
            ),
            models.CheckConstraint(
                condition=Q(renewal_period__in=["", "month", "quarter", "year"]), name="product_renewal_period_valid"
            ),
            models.CheckConstraint(
                condition=Q(renewal_period="", period_price__isnull=True)
                | (~Q(renewal_period="") & Q(period_price__gte=0)),
                name="product_period_price_iff_subscription",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"

    def clean(self):
        super().clean()
        if self.renewal_period and self.period_price is None:
            raise ValidationError({"period_price": "A subscription needs its price per renewal period."})
        if not self.renewal_period and self.period_price is not None:
            raise ValidationError({"period_price": "Only a subscription (with a renewal period) has a period price."})

    @property
    def is_subscription(self) -> bool:
        return bool(self.renewal_period)

    @property
    def period_months(self) -> int | None:
        """Months per renewal period, or None for a product that is not a subscription."""
        return self.PERIOD_MONTHS.get(self.renewal_period)


class Purchase(SyncedModel):
    """One purchase line: the product-holdings facet's history."""

    # No index of their own: purchase_customer_date_idx and purchase_product_cust_idx lead with
    # them (every index costs on bulk loads).
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="purchases", db_index=False)
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.PROTECT, related_name="purchases", db_index=False,
        help_text="Empty when the source (e.g. an imported order total) names no product.",
    )
    quantity = models.DecimalField(max_digits=12, decimal_places=3, default=1)
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    amount = models.DecimalField(
        max_digits=14, decimal_places=2, help_text="Line total as charged (after any discount)."
    )
    unit_cost = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True,
        help_text="Cost per unit; when empty, the product's unit cost is used for margin.",
    )
    purchased_at = models.DateTimeField()
    order_ref = models.CharField(max_length=100, blank=True)

    objects = VisibleQuerySet.as_manager()

    class Meta:
        ordering = ["-purchased_at", "-id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["customer", "purchased_at"], name="purchase_customer_date_idx"),
            models.Index(fields=["product", "customer"], name="purchase_product_cust_idx"),
            models.Index(fields=["purchased_at"], name="purchase_date_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="purchase_quantity_positive"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="purchase_unit_price_nonnegative"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="purchase_amount_nonnegative"),
            models.CheckConstraint(
                condition=Q(unit_cost__isnull=True) | Q(unit_cost__gte=0), name="purchase_unit_cost_nonnegative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer} {self.purchased_at:%Y-%m-%d} {self.amount}"


class Holding(SyncedModel):
    """A product the customer holds (or held): the current side of the holdings facet."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="holdings")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="holdings")
    quantity = models.DecimalField(
        max_digits=12, decimal_places=3, default=1, help_text="Units or seats held."
    )
    since = models.DateField()
    until = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)

    objects = VisibleQuerySet.as_manager()

    class Meta:
        ordering = ["customer", "product", "-since"]
        indexes = [
            change_position_index(),
            models.Index(fields=["customer", "status"], name="holding_customer_status_idx"),
            models.Index(fields=["product", "status"], name="holding_product_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=0), name="holding_quantity_nonnegative"),
            models.CheckConstraint(
                condition=Q(until__isnull=True) | Q(until__gte=models.F("since")), name="holding_until_after_since"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "suspended", "cancelled", "expired"]), name="holding_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer} holds {self.product.sku}"

    @property
    def capacity(self):
        """Capacity the holding gives (units × capacity per unit), or None."""
        if self.product.capacity_per_unit is None:
            return None
        return self.quantity * self.product.capacity_per_unit


class Usage(SyncedModel):
    """How much of a holding was used in a period, and the value the customer reports."""

    holding = models.ForeignKey(Holding, on_delete=models.CASCADE, related_name="usage")
    period_start = models.DateField()
    period_end = models.DateField()
    used = models.DecimalField(max_digits=14, decimal_places=3, help_text="Amount used, in the product's capacity unit.")
    capacity = models.DecimalField(
        max_digits=14, decimal_places=3, null=True, blank=True,
        help_text="Capacity held in the period (e.g. seats licensed); defaults from the holding.",
    )
    satisfaction = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 (poor) to 5 (excellent).")
    nps = models.PositiveSmallIntegerField(
        "NPS answer", null=True, blank=True, help_text="Likelihood to recommend, 0 to 10."
    )
    note = models.TextField(blank=True)

    objects = UsageQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "usage"
        ordering = ["holding", "-period_start"]
        indexes = [change_position_index()]
        constraints = [
            models.UniqueConstraint(fields=["holding", "period_start"], name="usage_one_per_holding_period"),
            models.CheckConstraint(condition=Q(used__gte=0), name="usage_used_nonnegative"),
            models.CheckConstraint(
                condition=Q(capacity__isnull=True) | Q(capacity__gte=0), name="usage_capacity_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(period_end__gte=models.F("period_start")), name="usage_period_end_after_start"
            ),
            models.CheckConstraint(
                condition=Q(satisfaction__isnull=True) | Q(satisfaction__gte=1, satisfaction__lte=5),
                name="usage_satisfaction_range",
            ),
            models.CheckConstraint(condition=Q(nps__isnull=True) | Q(nps__lte=10), name="usage_nps_range"),
        ]

    def __str__(self) -> str:
        return f"{self.holding} {self.period_start}"


class Contact(SyncedModel):
    """One interaction with people of the customer's decision-making unit."""

    class Channel(models.TextChoices):
        CALL = "call", "Call"
        EMAIL = "email", "Email"
        MEETING = "meeting", "Meeting"
        VISIT = "visit", "Visit"
        CHAT = "chat", "Chat"

    class Direction(models.TextChoices):
        OUTBOUND = "outbound", "Outbound (we reached out)"
        INBOUND = "inbound", "Inbound (they reached us: request, feedback, complaint)"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="contacts")
    channel = models.CharField(max_length=20, choices=Channel.choices)
    direction = models.CharField(max_length=20, choices=Direction.choices, default=Direction.OUTBOUND)
    people = models.ManyToManyField(Person, blank=True, related_name="contacts")
    salesperson = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="contacts"
    )
    occurred_at = models.DateTimeField()
    subject = models.CharField(max_length=200)
    notes = models.TextField(blank=True)
    outcome = models.CharField(max_length=200, blank=True)
    follow_up_on = models.DateField(null=True, blank=True)
    follow_up_done_at = models.DateTimeField(null=True, blank=True)

    objects = VisibleQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["customer", "occurred_at"], name="contact_customer_date_idx"),
            models.Index(fields=["salesperson", "follow_up_on"], name="contact_followup_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(channel__in=["call", "email", "meeting", "visit", "chat"]), name="contact_channel_valid"
            ),
            models.CheckConstraint(
                condition=Q(direction__in=["outbound", "inbound"]), name="contact_direction_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} with {self.customer}: {self.subject}"


class Event(SyncedModel):
    """Something that happened in the customer's life or business."""

    class Kind(models.TextChoices):
        NEW_OPPORTUNITY = "new_opportunity", "New business opportunity"
        COMPETITOR_CHANGE = "competitor_change", "Change in competitive activity"
        MERGER = "merger", "Merger or acquisition"
        LEADERSHIP_CHANGE = "leadership_change", "Leadership change"
        FUNDING = "funding", "Funding"
        RELOCATION = "relocation", "Relocation"
        COMPLAINT = "complaint", "Complaint"
        REFERRAL = "referral", "Referral given"
        FAMILY_EVENT = "family_event", "Family event (birth, marriage, ...)"
        BUDGET_CUT = "budget_cut", "Budget cut"
        EXPANSION = "expansion", "Expansion or growth"
        OTHER = "other", "Other"

    class Impact(models.TextChoices):
        POSITIVE = "positive", "Positive"
        NEUTRAL = "neutral", "Neutral"
        NEGATIVE = "negative", "Negative"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    occurred_at = models.DateTimeField()
    impact = models.CharField(max_length=10, choices=Impact.choices, default=Impact.NEUTRAL)
    description = models.TextField(blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="events_recorded"
    )

    objects = VisibleQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["customer", "occurred_at"], name="event_customer_date_idx"),
            models.Index(fields=["kind", "occurred_at"], name="event_kind_date_idx"),
            # the latest events of a salesperson's accounts (My day): walked newest first
            models.Index(fields=["-occurred_at", "-id"], name="event_recent_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "new_opportunity", "competitor_change", "merger", "leadership_change", "funding",
                        "relocation", "complaint", "referral", "family_event", "budget_cut", "expansion", "other",
                    ]
                ),
                name="event_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(impact__in=["positive", "neutral", "negative"]), name="event_impact_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.customer}"


class Opportunity(SyncedModel):
    """A cross-sell or up-sell suggestion, with the evidence a salesperson can say aloud."""

    class Kind(models.TextChoices):
        CROSS_SELL = "cross_sell", "Cross-sell"
        UP_SELL = "up_sell", "Up-sell"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACCEPTED = "accepted", "Accepted"
        DISMISSED = "dismissed", "Dismissed"
        WON = "won", "Won"
        LOST = "lost", "Lost"
        EXPIRED = "expired", "Expired (no longer supported by the data)"

    class DismissReason(models.TextChoices):
        NOT_RELEVANT = "not_relevant", "Not relevant"
        ALREADY_HAS = "already_has", "Already has it"
        BAD_TIMING = "bad_timing", "Bad timing"
        OTHER = "other", "Other"

    # Indexes: every one is written for each of the ~100,000 rows a regeneration inserts, so the
    # customer has none of its own (opp_customer_status_idx and the unique constraint start with
    # it) and the nullable references have partial ones (Meta.indexes) over the rows that have them.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="opportunities", db_index=False)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="opportunities")
    from_product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False,
        help_text="For an up-sell: the tier the customer holds now.",
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    rule = models.CharField(
        max_length=120, blank=True, default="",
        help_text="The rule or model that produced it (for example holdings:association or "
        "purchases:item-item:family), so outcomes can be counted per rule.",
    )
    score = models.FloatField(default=0, help_text="Ranking score: strength of evidence times value.")
    expected_value = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    evidence = models.TextField(help_text="Why it was suggested, in words a salesperson can say aloud.")
    evidence_data = models.JSONField(default=dict, blank=True, help_text="The numbers behind the evidence.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    generated_at = models.DateTimeField(help_text="When the engine last produced it or changed what it says.")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    won_purchase = models.ForeignKey(
        Purchase, null=True, blank=True, on_delete=models.SET_NULL, related_name="won_opportunities", db_index=False,
        help_text="The purchase that realised a won opportunity, once it arrives.",
    )
    dismiss_reason = models.CharField(
        max_length=20, choices=DismissReason.choices, blank=True,
        help_text="Why the salesperson dismissed it (empty unless dismissed).",
    )
    dismiss_note = models.CharField(max_length=300, blank=True, help_text="The reason in their words (for “other”).")

    objects = VisibleQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "opportunities"
        ordering = ["-score", "id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["customer", "status"], name="opp_customer_status_idx"),
            # The decided ones (won, dismissed...: looked up by status); open and expired rows,
            # the ones regeneration writes, are not in it.
            models.Index(
                fields=["status", "kind"], name="opp_decided_status_kind_idx",
                condition=~Q(status__in=["open", "expired"]),
            ),
            # For deleting a product, user or purchase (SET NULL finds the rows that point to it).
            models.Index(fields=["from_product"], name="opp_from_product_idx", condition=Q(from_product__isnull=False)),
            models.Index(
                fields=["status_changed_by"], name="opp_status_changed_by_idx", condition=Q(status_changed_by__isnull=False)
            ),
            models.Index(fields=["won_purchase"], name="opp_won_purchase_idx", condition=Q(won_purchase__isnull=False)),
            # A salesperson's best open offers (My day, the next best actions): walked in this order
            # until enough of their accounts' rows are found, instead of sorting every open offer.
            models.Index(
                fields=["-expected_value", "-score", "id"], name="opp_open_value_idx",
                condition=Q(status__in=["open", "accepted"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["customer", "product", "kind"], name="opportunity_one_per_suggestion"),
            models.CheckConstraint(condition=Q(score__gte=0), name="opportunity_score_nonnegative"),
            models.CheckConstraint(condition=Q(expected_value__gte=0), name="opportunity_value_nonnegative"),
            models.CheckConstraint(condition=Q(kind__in=["cross_sell", "up_sell"]), name="opportunity_kind_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["open", "accepted", "dismissed", "won", "lost", "expired"]),
                name="opportunity_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(dismiss_reason__in=["", "not_relevant", "already_has", "bad_timing", "other"]),
                name="opportunity_dismiss_reason_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.product.sku} for {self.customer}"


class OpportunityOutcome(models.Model):
    """An earlier outcome of a suggestion that came back: kept so the outcome rates still count it.

    When a dismissal is older than CRM_SUPPRESS_DAYS and the engine suggests the same thing again,
    the opportunity opens once more and what was decided before is archived here.
    """

    opportunity = models.ForeignKey(Opportunity, on_delete=models.CASCADE, related_name="earlier_outcomes")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Opportunity.Kind.choices)
    rule = models.CharField(max_length=120, blank=True, default="")
    status = models.CharField(max_length=20, choices=Opportunity.Status.choices)
    dismiss_reason = models.CharField(max_length=20, choices=Opportunity.DismissReason.choices, blank=True)
    decided_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["kind", "rule"], name="opp_outcome_kind_rule_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.rule or '-'} {self.status} ({self.decided_at:%Y-%m-%d})"


class TaskQuerySet(VisibleQuerySet):
    """Tasks are seen through their customer, and by whoever they are assigned to."""

    def visible_to(self, user):
        if not (getattr(user, "is_authenticated", False) and user.is_active):
            return self.none()
        if user.sees_everything:
            return self.all()  # (an empty Q() OR-ed with another would narrow to that other)
        return self.filter(customer_visibility_q(user, self.customer_path) | Q(assigned_to=user))

    def open(self):
        return self.filter(done_at__isnull=True)


class Task(SyncedModel):
    """Something a salesperson must do on an account by a day: a standalone task
    ("call Anna about the renewal") or the follow-up promised when a contact was logged.

    A contact's follow-up is a task linked to the contact (`contact`); crm.services keeps the
    two in step, so completing either completes both and there is one list to work from.
    """

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="tasks")
    contact = models.OneToOneField(
        Contact, null=True, blank=True, on_delete=models.CASCADE, related_name="task",
        help_text="The contact whose follow-up this is; empty for a standalone task.",
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks",
        help_text="The salesperson who must do it.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    title = models.CharField(max_length=200)
    notes = models.TextField(blank=True)
    due_on = models.DateField()
    due_time = models.TimeField(null=True, blank=True, help_text="Optional time of day.")
    original_due_on = models.DateField(
        null=True, blank=True, help_text="The first due date, once the task has been snoozed."
    )
    snoozed_at = models.DateTimeField(null=True, blank=True, help_text="When it was last snoozed.")
    done_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True, help_text="What came of it, noted on completion.")

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["due_on", "due_time", "id"]
        indexes = [
            change_position_index(),
            models.Index(fields=["assigned_to", "done_at", "due_on"], name="task_assignee_due_idx"),
            models.Index(fields=["customer", "due_on"], name="task_customer_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.due_on:%Y-%m-%d})"

    @property
    def is_done(self) -> bool:
        return self.done_at is not None


class Tombstone(models.Model):
    """The deletion log: one row per deleted synced record, so sync clients learn of deletions.

    `owner` is the deleted record's customer's owner at the time, so the change feed shows a
    deletion to the same people who could see the record (catalogue deletions to everyone).

    A record that moves out of someone's view (its customer changes owner, or it moves to
    another customer) gets a "moved" row: for the people who could see it before and cannot
    now, it is gone all the same. `now_customer_id` is the customer it belongs to now; the
    feed hides the row from whoever may see that customer.
    """

    class Reason(models.TextChoices):
        DELETED = "deleted", "Deleted"
        MOVED = "moved", "Moved out of view"

    model = models.CharField(max_length=50, help_text='Model label, e.g. "crm.customer".')
    reason = models.CharField(max_length=10, choices=Reason.choices, default=Reason.DELETED)
    now_customer_id = models.BigIntegerField(
        null=True, blank=True, help_text="For a moved record: the customer it belongs to now."
    )
    object_id = models.BigIntegerField()
    external_id = models.CharField(max_length=100, null=True, blank=True)
    customer_id = models.BigIntegerField(null=True, blank=True, help_text="The deleted record's customer, if any.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Owner of that customer when the record was deleted.",
    )
    team_id = models.BigIntegerField(
        null=True, blank=True,
        help_text="That owner's team when the record was deleted or moved: its manager learns of it, "
        "whatever team the owner joins later.",
    )
    deleted_at = models.DateTimeField(auto_now_add=True, db_index=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    change_txid = models.BigIntegerField(default=0, editable=False)
    change_seq = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["deleted_at", "id"]
        indexes = [
            models.Index(fields=["model", "object_id"], name="tombstone_model_object_idx"),
            change_position_index(),
        ]

    def __str__(self) -> str:
        return f"{self.model}#{self.object_id} deleted {self.deleted_at:%Y-%m-%d %H:%M}"


class SyncHorizon(models.Model):
    """How far back the change feed still reaches: tombstones deleted before this were pruned.

    One row at most. A sync cursor handed out before `pruned_before` may have missed a
    deletion and gets 410 Gone: the client must resync in full.
    """

    pruned_before = models.DateTimeField()

    def __str__(self) -> str:
        return f"tombstones kept from {self.pruned_before:%Y-%m-%d %H:%M}"


class SyncReset(models.Model):
    """When a user's view of the customers last changed as a whole (their team, role or
    status; a team's manager): sync cursors handed to them before that get 410 Gone, and
    their clients resync in full. Written by crm.sync.require_resync."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reset_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user} resync from {self.reset_at:%Y-%m-%d %H:%M}"


class IdempotencyRecord(models.Model):
    """The first response to a POST sent with an Idempotency-Key, replayed on a retry."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the request body.")
    status_code = models.PositiveSmallIntegerField()
    response_body = models.JSONField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_one_per_user_key")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"


class NextActionShown(models.Model):
    """An item of a salesperson's next-best-action list, recorded the first day it was on the list.

    Written once a day per salesperson when the list is computed (the nightly task or the first
    view of the day), for the items not already recorded within NBA_ACTED_WINDOW_DAYS; managers'
    "acted on" counts compare it with what happened after `shown_on` (a contact logged with the
    customer, the task completed, the opportunity's status changed).
    """

    class Kind(models.TextChoices):
        RETENTION = "retention", "Retention call"
        RENEWAL = "renewal", "Renewal at risk"
        FOLLOW_UP = "follow_up", "Overdue follow-up"
        CROSS_SELL = "cross_sell", "Cross-sell"
        UP_SELL = "up_sell", "Up-sell"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    key = models.CharField(max_length=60, help_text='What the item is about, e.g. "task:12" or "retention:40".')
    object_id = models.BigIntegerField(
        null=True, blank=True, help_text="The task, opportunity or holding the item is about (none for retention)."
    )
    expected_value = models.DecimalField(max_digits=14, decimal_places=2)
    shown_on = models.DateField()

    class Meta:
        indexes = [models.Index(fields=["user", "shown_on"], name="nba_shown_user_day_idx")]
        constraints = [
            models.UniqueConstraint(fields=["user", "key", "shown_on"], name="nba_shown_once_a_day"),
            models.CheckConstraint(
                condition=Q(kind__in=["retention", "renewal", "follow_up", "cross_sell", "up_sell"]),
                name="nba_shown_kind_valid",
            ),
            models.CheckConstraint(condition=Q(expected_value__gte=0), name="nba_shown_value_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.key} on {self.shown_on:%Y-%m-%d}"


# The change history's event tables (django-pghistory), one per tracked model.
from crm.history_models import *  # noqa: E402, F403
from crm.import_models import *  # noqa: E402, F403
from crm.webhooks.models import *  # noqa: E402, F403
