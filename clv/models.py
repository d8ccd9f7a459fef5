"""The nightly CLV runs and what they stored, and the purchase summary the runs read.

A run writes its values inside one transaction that also makes it the current run, so
readers see either yesterday's complete set or today's, never a half-written one. Runs and
their values are kept as history for trends.

PurchaseDay and PurchaseSummary are the per-customer purchase summary kept current by
clv.summary on every purchase write, so a run reads one row per customer instead of
aggregating every purchase line.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ClvRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    is_current = models.BooleanField(default=False, help_text="The run whose values pages and the API read.")
    as_of = models.DateField(help_text="Purchases up to the end of this day were used.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=30, blank=True)
    params = models.JSONField(default=dict, blank=True)
    diagnostics = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds per phase.")
    counts = models.JSONField(default=dict, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["is_current"], condition=Q(is_current=True), name="clvrun_one_current"),
            models.CheckConstraint(
                condition=Q(status__in=["running", "succeeded", "failed"]), name="clvrun_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(is_current=False) | Q(status="succeeded"), name="clvrun_current_succeeded"
            ),
        ]

    def __str__(self) -> str:
        return f"CLV run {self.pk} as of {self.as_of} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class CustomerValue(models.Model):
    # Written a million rows at a time by the run: the foreign keys are kept by Django
    # (deleting a customer or a run deletes its values) and not by per-row database
    # triggers, which cost as much as the write itself; the indexes below cover both keys.
    run = models.ForeignKey(ClvRun, on_delete=models.CASCADE, related_name="values", db_index=False,
                            db_constraint=False)
    customer = models.ForeignKey("crm.Customer", on_delete=models.CASCADE, related_name="clv_values",
                                 db_index=False, db_constraint=False)
    clv = models.DecimalField(
        "CLV", max_digits=16, decimal_places=2,
        help_text="Discounted expected margin over the whole remaining relationship (DERT x value per purchase x margin).",
    )
    p_alive = models.FloatField(help_text="Probability the customer is still active.")
    expected_purchases = models.FloatField(help_text="Expected purchase occasions over the horizon.")
    expected_avg_value = models.DecimalField(max_digits=14, decimal_places=2)
    historical_value = models.DecimalField(max_digits=16, decimal_places=2, help_text="Margin so far.")
    classic_value = models.DecimalField(
        max_digits=16, decimal_places=2, help_text="Average purchase value × frequency × expected lifespan × margin."
    )
    # The whole relationship, the next months beside it, and 80% intervals (clv.engine.purchase).
    horizon_value = models.DecimalField(
        max_digits=16, decimal_places=2, null=True, blank=True,
        help_text="Discounted expected margin over the next CLV_HORIZON_MONTHS months (12 by default).",
    )
    dert = models.FloatField(
        "discounted expected residual purchases", null=True, blank=True,
        help_text="Expected future purchases over the whole remaining relationship, each discounted to today.",
    )
    expected_purchases_low = models.FloatField(null=True, blank=True, help_text="80% interval of the horizon's purchases: low end.")
    expected_purchases_high = models.FloatField(null=True, blank=True, help_text="80% interval of the horizon's purchases: high end.")
    horizon_value_low = models.DecimalField(max_digits=16, decimal_places=2, null=True, blank=True)
    horizon_value_high = models.DecimalField(max_digits=16, decimal_places=2, null=True, blank=True)
    clv_low = models.DecimalField("CLV low", max_digits=16, decimal_places=2, null=True, blank=True,
                                  help_text="80% interval of CLV: low end.")
    clv_high = models.DecimalField("CLV high", max_digits=16, decimal_places=2, null=True, blank=True,
                                   help_text="80% interval of CLV: high end.")
    frequency = models.IntegerField(help_text="Repeat purchase occasions (distinct days after the first).")
    recency = models.FloatField(help_text="Days from first to last purchase occasion.")
    T = models.FloatField(help_text="Days from first purchase to the run's as-of date.")
    # The customer's total CLV is `clv`: the transactional part (ad-hoc purchases) plus this
    # contractual part, added by clv.contracts.add_contract_values, the one place that sums them.
    contract_value = models.DecimalField(
        max_digits=16, decimal_places=2, default=0, db_default=0,
        help_text="Discounted expected residual margin of the customer's subscriptions; included in clv.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "customer"], name="customervalue_one_per_run"),
            models.CheckConstraint(condition=Q(p_alive__gte=0, p_alive__lte=1), name="customervalue_p_alive_range"),
            models.CheckConstraint(condition=Q(frequency__gte=0), name="customervalue_frequency_nonnegative"),
        ]
        indexes = [
            models.Index(fields=["run", "clv"], name="customervalue_run_clv_idx"),
            models.Index(fields=["customer", "run"], name="customervalue_customer_run_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} in run {self.run_id}: {self.clv}"

    @property
    def transactional_value(self):
        """The part of clv from ad-hoc purchases (clv less the contractual part)."""
        return self.clv - self.contract_value


class HoldingValue(models.Model):
    """One active subscription holding (a contract) valued by one run: renewal odds and residual value.

    Written by clv.contracts in the transaction that makes the run current, beside the run's
    customer values; the customer's contract_value is the sum of its holdings' residual_value.
    """

    run = models.ForeignKey(ClvRun, on_delete=models.CASCADE, related_name="holding_values", db_index=False,
                            db_constraint=False)
    holding = models.ForeignKey("crm.Holding", on_delete=models.CASCADE, related_name="clv_values",
                                db_index=False, db_constraint=False)
    customer = models.ForeignKey("crm.Customer", on_delete=models.CASCADE, related_name="holding_values",
                                 db_index=False, db_constraint=False)
    segment = models.CharField(max_length=150, help_text="The renewal histories the model was fitted on.")
    model = models.CharField(max_length=10, help_text="sbg or bdw.")
    periods = models.IntegerField(help_text="Renewal periods begun, the current one included.")
    next_renewal = models.DateField()
    p_renew = models.FloatField(help_text="Probability of renewing at the next renewal.")
    expected_remaining_periods = models.FloatField(
        help_text="Expected further periods paid within the horizon of the run (after the current one)."
    )
    period_value = models.DecimalField(max_digits=14, decimal_places=2, help_text="Margin per renewal period.")
    residual_value = models.DecimalField(
        max_digits=16, decimal_places=2, help_text="Discounted expected margin of all future renewals."
    )
    value_at_stake = models.DecimalField(
        max_digits=16, decimal_places=2, help_text="(1 - p_renew) x residual_value: what the next renewal puts at risk."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "holding"], name="holdingvalue_one_per_run"),
            models.CheckConstraint(condition=Q(p_renew__gte=0, p_renew__lte=1), name="holdingvalue_p_renew_range"),
            models.CheckConstraint(condition=Q(periods__gte=1), name="holdingvalue_periods_positive"),
        ]
        indexes = [
            models.Index(fields=["run", "next_renewal"], name="holdingvalue_run_renewal_idx"),
            models.Index(fields=["customer", "run"], name="holdingvalue_customer_run_idx"),
            models.Index(fields=["holding", "run"], name="holdingvalue_holding_run_idx"),
        ]

    def __str__(self) -> str:
        return f"holding {self.holding_id} in run {self.run_id}: {self.residual_value}"


class PortfolioSnapshot(models.Model):
    """Per owner (and the unowned book, owner empty) totals of one run, for dashboards and trends."""

    run = models.ForeignKey(ClvRun, on_delete=models.CASCADE, related_name="snapshots")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    customers = models.IntegerField()
    total_clv = models.DecimalField(max_digits=18, decimal_places=2)
    total_historical = models.DecimalField(max_digits=18, decimal_places=2)
    at_risk_customers = models.IntegerField()
    value_at_risk = models.DecimalField(max_digits=18, decimal_places=2)

    class Meta:
        indexes = [models.Index(fields=["run", "owner"], name="snapshot_run_owner_idx")]

    def __str__(self) -> str:
        return f"run {self.run_id} owner {self.owner_id}: {self.total_clv}"


class PurchaseDay(models.Model):
    """One customer's purchase lines on one calendar day (in TIME_ZONE): one purchase occasion.

    Margin is kept in parts so that a run can apply CLV_DEFAULT_MARGIN as it is that night:
    margin = amount - cost - uncosted_price x (1 - default margin).
    """

    pk = models.CompositePrimaryKey("customer_id", "day")
    customer = models.ForeignKey(
        "crm.Customer", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    day = models.DateField()
    lines = models.IntegerField()
    amount = models.DecimalField(max_digits=20, decimal_places=2)
    cost = models.DecimalField(
        max_digits=30, decimal_places=5, help_text="Quantity x unit cost of the lines whose cost is known."
    )
    uncosted_price = models.DecimalField(
        max_digits=30, decimal_places=5, help_text="Quantity x unit price of the lines with no known cost."
    )

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(lines__gt=0), name="purchaseday_lines_positive")]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.day}: {self.lines} lines, {self.amount}"


class PurchaseSummary(models.Model):
    """One customer's purchase history in one row: what a CLV run needs, kept current on every write."""

    customer = models.OneToOneField(
        "crm.Customer", on_delete=models.CASCADE, primary_key=True, related_name="+", db_constraint=False
    )
    first_day = models.DateField()
    last_day = models.DateField()
    days = models.IntegerField(help_text="Purchase occasions (distinct days); frequency is days - 1.")
    lines = models.IntegerField()
    total_value = models.DecimalField(max_digits=20, decimal_places=2)
    repeat_value = models.DecimalField(
        max_digits=20, decimal_places=2, help_text="Value bought on the days after the first."
    )
    cost = models.DecimalField(max_digits=30, decimal_places=5)
    uncosted_price = models.DecimalField(max_digits=30, decimal_places=5)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(days__gt=0, lines__gte=models.F("days")), name="purchasesummary_counts"),
            models.CheckConstraint(condition=Q(last_day__gte=models.F("first_day")), name="purchasesummary_days_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.days} days from {self.first_day} to {self.last_day}"
