"""What each resource looks like on the wire, and what a client may send.

Input rules shared by every resource: unknown fields are refused (400 naming them), read-only
fields are refused rather than silently dropped, related records are given by id (integer) or
by external_id (string) and must be visible to the caller, and fields that only some roles may
set (a customer's owner, a contact's salesperson) are checked against the caller's role.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db import models
from django.db.models import Q
from django.utils.functional import cached_property
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField, empty

from accounts.models import User
from clv.models import ClvRun, CustomerValue
from crm.bulk import among, storable_key, stored_instances
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Task, Usage
from crm.services import check_due_date, purchase_amounts

BIGINT_MAX = 2**63 - 1


def visible_queryset(model, user):
    return model.objects.all() if model is Product else model.objects.visible_to(user)


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class RefField(serializers.RelatedField):
    """A related record, given by id (integer) or external_id (string), among those the caller may see.

    A record the caller may not see is reported exactly like one that does not exist. In bulk
    requests the lookups are done once for the whole batch (see `prefetch_refs`).
    """

    default_error_messages = {
        "does_not_exist": "No {model} with {by} {value!r} (or not one you can see).",
        "incorrect_type": "Give an id (integer) or an external_id (string), not {data_type}.",
    }

    def __init__(self, model, **kwargs):
        self.model = model
        kwargs.setdefault("queryset", model.objects.all())
        super().__init__(**kwargs)

    def use_pk_only_optimization(self):
        return True

    def get_queryset(self):
        request = self.context.get("request")
        return visible_queryset(self.model, request.user if request else None)

    def to_representation(self, value):
        return value.pk

    def _key(self, data):
        if isinstance(data, bool) or not isinstance(data, int | str) or data == "":
            self.fail("incorrect_type", data_type=type(data).__name__)
        if isinstance(data, str) and not storable_key(data):
            self.fail("does_not_exist", model=self.model._meta.verbose_name, by="external_id", value=data[:100])
        return ("pk", data) if isinstance(data, int) else ("external_id", data)

    def to_internal_value(self, data):
        key = self._key(data)
        cache = self.context.get("ref_cache")
        if cache is not None and (self.model, key) in cache:
            found = cache[(self.model, key)]
        elif key[0] == "pk" and not 0 < key[1] <= BIGINT_MAX:
            found = None
        else:
            found = self.get_queryset().filter(**{key[0]: key[1]}).first()
        if found is None:
            self.fail("does_not_exist", model=self.model._meta.verbose_name, by=key[0].replace("pk", "id"), value=data)
        return found


def prefetch_refs(serializer: serializers.Serializer, records: list, user) -> dict:
    """Resolve every RefField value in `records` with one query per field, for bulk validation."""
    cache: dict = {}
    for name, field in serializer.fields.items():
        if not isinstance(field, RefField) or field.read_only:
            continue
        ids, external_ids = set(), set()
        for record in records:
            value = record.get(name) if isinstance(record, Mapping) else None
            if isinstance(value, bool):
                continue
            if isinstance(value, int) and 0 < value <= BIGINT_MAX:
                ids.add(value)
            elif isinstance(value, str) and value and storable_key(value):
                external_ids.add(value)
        if not ids and not external_ids:
            continue
        found = stored_instances(visible_queryset(field.model, user).filter(
            among(field.model, "id", sorted(ids)) | among(field.model, "external_id", sorted(external_ids))
        ), ["id", "external_id"])
        for obj in found:
            cache[(field.model, ("pk", obj.pk))] = obj
            if obj.external_id:
                cache[(field.model, ("external_id", obj.external_id))] = obj
        for value in ids:
            cache.setdefault((field.model, ("pk", value)), None)
        for value in external_ids:
            cache.setdefault((field.model, ("external_id", value)), None)
    return cache


class ApiModelSerializer(serializers.ModelSerializer):
    """Refuses unknown and read-only fields instead of dropping them silently."""

    external_id = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=False)

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            errors = {}
            for key in data:
                field = self.fields.get(key)
                if field is None:
                    errors[key] = ["Unknown field."]
                elif field.read_only:
                    errors[key] = ["This field is read-only."]
            if errors:
                raise serializers.ValidationError(errors)
        # A plain dict: the fields it leaves out that would only be skipped are not run at all
        # (see _writable_fields); bulk writes and imports validate many such records.
        self._given = data if type(data) is dict else None
        try:
            return super().to_internal_value(data)
        finally:
            self._given = None

    @property
    def _writable_fields(self):
        """DRF's writable fields, less those absent from a plain-dict input that DRF would skip
        anyway (SkipField from validate_empty_values, before any validator or validate_<field>):
        every absent field of a partial update; on a create, absent fields neither required nor
        with a default. Only fields reading their value as Field.get_value does (the key of their
        name) are left out, so the outcome is DRF's, without a raised SkipField per absent field."""
        writable, skippable = self._field_lists
        given = getattr(self, "_given", None)
        if given is None:
            return iter(writable)
        partial = getattr(self.root, "partial", False)
        return (f for f in writable if f.field_name in given or not (partial and f in skippable[0]
                                                                          or f in skippable[1]))

    @cached_property
    def _field_lists(self):
        writable = [f for f in self.fields.values() if not f.read_only]
        plain = {f for f in writable if type(f).get_value is serializers.Field.get_value}
        return writable, (plain, {f for f in plain if not f.required and f.default is empty})

    def _read_only_defaults(self):
        # DRF's, with its per-record scan of every field for read-only ones with a default done once.
        defaults = {}
        for field in self._read_only_with_defaults:
            try:
                defaults[field.source] = field.get_default()
            except SkipField:
                continue
        return defaults

    @cached_property
    def _read_only_with_defaults(self):
        return [f for f in self.fields.values()
                if f.read_only and f.default is not empty and f.source != "*" and "." not in f.source]

    def build_standard_field(self, field_name, model_field):
        field_class, field_kwargs = super().build_standard_field(field_name, model_field)
        if isinstance(model_field, models.TextField) and "choices" not in field_kwargs:
            field_kwargs.setdefault("max_length", settings.API_MAX_TEXT_LENGTH)
        return field_class, field_kwargs

    def get_validators(self):
        # Multi-field uniqueness is checked by the model (services run full_clean) and the
        # database, so a unique pair does not make its fields required here.
        return []

    @property
    def user(self) -> User | None:
        request = self.context.get("request")
        return request.user if request else None


READ_ONLY = ["id", "created_at", "updated_at"]


class IdField(serializers.PrimaryKeyRelatedField):
    """A related record by its id: a whole number in the database's range, looked up among the
    records the caller may give; any other id answers exactly like one that does not exist."""

    default_error_messages = {
        "does_not_exist": "No {model} with id {pk_value!r} that you may give here.",
        "incorrect_type": "Give an id (a whole number), not {data_type}.",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        if not 0 < data <= BIGINT_MAX:
            self.fail("does_not_exist", model=self.queryset.model._meta.verbose_name, pk_value=data)
        found = self.get_queryset().filter(pk=data).first()
        if found is None:
            self.fail("does_not_exist", model=self.queryset.model._meta.verbose_name, pk_value=data)
        return found


class OwnerField(IdField):
    """A user the caller may assign: salespeople themselves, managers also the salespeople of their
    teams, admins anyone active. Others, and users that do not exist, get the same answer."""

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", User.objects.filter(is_active=True))
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        return assignable_users(request.user if request else None)


def assignable_users(user: User | None):
    active = User.objects.filter(is_active=True)
    if user is None or not getattr(user, "is_authenticated", False):
        return active.none()
    if user.sees_everything:
        return active
    if user.is_manager:
        return active.filter(Q(pk=user.pk) | Q(team__manager=user))
    return active.filter(pk=user.pk)


def check_assignable(user: User | None, assignee: User | None, field: str, *, none_ok: bool = False) -> None:
    """Salespeople work their own records; managers assign within their teams; admins anyone
    (OwnerField already refuses anyone else). Leaving a customer without an owner hides it from
    everyone but admins, so only admins may."""
    if assignee is None and not none_ok and user is not None and not user.sees_everything:
        raise serializers.ValidationError({field: ["Only admins may leave this empty."]})


class _CheckedTextField(serializers.CharField):
    """Text checked by a Django validator when not empty (no format in the schema: empty is valid)."""

    validator = None

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value:
            try:
                self.validator(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(exc.messages) from None
        return value


@extend_schema_field({"type": "string", "maxLength": 254, "description": "An e-mail address, or empty."})
class BlankableEmailField(_CheckedTextField):
    validator = EmailValidator()

    def __init__(self, **kwargs):
        super().__init__(max_length=254, allow_blank=True, required=False, **kwargs)


@extend_schema_field({"type": "string", "maxLength": 200, "description": "A web address, or empty."})
class BlankableUrlField(_CheckedTextField):
    validator = URLValidator()

    def __init__(self, **kwargs):
        super().__init__(max_length=200, allow_blank=True, required=False, **kwargs)


def email_field():
    return BlankableEmailField()


class CustomerSerializer(ApiModelSerializer):
    owner = OwnerField(required=False, allow_null=True, help_text="The owning salesperson; defaults to the caller.")
    email = email_field()
    website = BlankableUrlField()
    lost_reason = serializers.ChoiceField(
        choices=Customer.LostReason.choices, allow_blank=True, read_only=True,
        help_text="Why the customer was lost (empty unless lost).",
    )

    class Meta:
        model = Customer
        fields = [
            "id", "external_id", "name", "kind", "owner", "relationship_type", "lifecycle_stage", "acquired_on",
            "lost_on", "lost_reason", "lost_note", "industry", "address", "city", "country", "email", "phone",
            "website", "notes", "created_at", "updated_at",
        ]
        read_only_fields = [*READ_ONLY, "lost_reason", "lost_note"]

    def validate(self, attrs):
        if "owner" in attrs:
            check_assignable(self.user, attrs["owner"], "owner")
        elif self.instance is None and self.user is not None:
            attrs["owner"] = self.user
        return attrs


class CustomerChildSerializer(ApiModelSerializer):
    customer = RefField(Customer, help_text="The customer: its id, or its external_id as a string.")
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True, allow_null=True)


class PersonSerializer(CustomerChildSerializer):
    email = email_field()

    class Meta:
        model = Person
        fields = [
            "id", "external_id", "customer", "customer_external_id", "first_name", "last_name", "job_title",
            "dmu_role", "email", "phone", "is_active", "is_primary", "erased_at", "created_at", "updated_at",
        ]
        read_only_fields = READ_ONLY


class ProductSerializer(ApiModelSerializer):
    list_price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal(0))
    unit_cost = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal(0), required=False)
    tier = serializers.IntegerField(min_value=1, max_value=32767, required=False)
    capacity_per_unit = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=Decimal("0.01"), required=False, allow_null=True
    )
    renewal_period = serializers.ChoiceField(
        choices=Product.RenewalPeriod.choices, required=False, allow_blank=True,
        help_text='"month", "quarter" or "year" for a subscription; "" (default) for a product bought ad hoc.',
    )
    period_price = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=Decimal(0), required=False, allow_null=True,
        help_text="Price per renewal period and unit held; required for a subscription, empty otherwise.",
    )

    class Meta:
        model = Product
        fields = [
            "id", "external_id", "sku", "name", "family", "category", "tier", "list_price", "unit_cost", "capacity_unit",
            "capacity_per_unit", "is_active", "description", "renewal_period", "period_price", "created_at",
            "updated_at",
        ]
        read_only_fields = READ_ONLY

    def validate(self, attrs):
        period = attrs.get("renewal_period", getattr(self.instance, "renewal_period", ""))
        if "renewal_period" in attrs and not period and "period_price" not in attrs:
            attrs["period_price"] = None  # no longer a subscription: its period price goes with it
        price = attrs.get("period_price", getattr(self.instance, "period_price", None))
        if period and price is None:
            raise serializers.ValidationError({"period_price": ["A subscription needs its price per renewal period."]})
        if not period and price is not None:
            raise serializers.ValidationError(
                {"period_price": ["Only a subscription (with a renewal_period) has a period price."]}
            )
        return attrs


MONEY = {"max_digits": 12, "decimal_places": 2, "min_value": Decimal(0)}


class PurchaseSerializer(CustomerChildSerializer):
    product = RefField(Product, required=False, allow_null=True)
    quantity = serializers.DecimalField(max_digits=12, decimal_places=3, min_value=Decimal("0.001"), required=False)
    unit_price = serializers.DecimalField(**MONEY, required=False, help_text="Defaults to amount / quantity.")
    amount = serializers.DecimalField(
        max_digits=14, decimal_places=2, min_value=Decimal(0), required=False,
        help_text="Line total as charged; defaults to quantity x unit price.",
    )
    unit_cost = serializers.DecimalField(**MONEY, required=False, allow_null=True)

    class Meta:
        model = Purchase
        fields = [
            "id", "external_id", "customer", "customer_external_id", "product", "quantity", "unit_price", "amount",
            "unit_cost", "purchased_at", "order_ref", "created_at", "updated_at",
        ]
        read_only_fields = READ_ONLY

    def validate(self, attrs):
        if self.instance is None or {"amount", "unit_price", "quantity"} & set(attrs):
            quantity = attrs.get("quantity", self.instance.quantity if self.instance else Decimal(1))
            amount = attrs.get("amount")
            unit_price = attrs.get("unit_price")
            if self.instance is not None and amount is None and unit_price is None:
                unit_price = self.instance.unit_price
            attrs["quantity"] = quantity
            attrs["amount"], attrs["unit_price"] = purchase_amounts(
                quantity=quantity, amount=amount, unit_price=unit_price
            )
        return attrs


class HoldingSerializer(CustomerChildSerializer):
    product = RefField(Product)
    quantity = serializers.DecimalField(max_digits=12, decimal_places=3, min_value=Decimal(0), required=False)

    class Meta:
        model = Holding
        fields = [
            "id", "external_id", "customer", "customer_external_id", "product", "quantity", "since", "until",
            "status", "created_at", "updated_at",
        ]
        read_only_fields = READ_ONLY

    def validate(self, attrs):
        since = attrs.get("since", getattr(self.instance, "since", None))
        until = attrs.get("until", getattr(self.instance, "until", None))
        if since and until and until < since:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        return attrs


class UsageSerializer(ApiModelSerializer):
    holding = RefField(Holding)
    used = serializers.DecimalField(max_digits=14, decimal_places=3, min_value=Decimal(0))
    capacity = serializers.DecimalField(
        max_digits=14, decimal_places=3, min_value=Decimal(0), required=False, allow_null=True
    )
    satisfaction = serializers.IntegerField(min_value=1, max_value=5, required=False, allow_null=True)
    nps = serializers.IntegerField(min_value=0, max_value=10, required=False, allow_null=True)

    class Meta:
        model = Usage
        fields = [
            "id", "external_id", "holding", "period_start", "period_end", "used", "capacity", "satisfaction", "nps",
            "note", "created_at", "updated_at",
        ]
        read_only_fields = READ_ONLY

    def validate(self, attrs):
        start = attrs.get("period_start", getattr(self.instance, "period_start", None))
        end = attrs.get("period_end", getattr(self.instance, "period_end", None))
        if start and end and end < start:
            raise serializers.ValidationError({"period_end": ["Must not be before period_start."]})
        return attrs


class PeopleField(IdField):
    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Person.objects.all())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        return Person.objects.visible_to(request.user if request else None)


class ContactSerializer(CustomerChildSerializer):
    people = PeopleField(many=True, required=False, help_text="Ids of the people of this customer who took part.")
    salesperson = OwnerField(required=False, allow_null=True, help_text="Defaults to the caller.")

    class Meta:
        model = Contact
        fields = [
            "id", "external_id", "customer", "customer_external_id", "channel", "direction", "people", "salesperson",
            "occurred_at", "subject", "notes", "outcome", "follow_up_on", "follow_up_done_at", "created_at",
            "updated_at",
        ]
        read_only_fields = READ_ONLY

    def validate(self, attrs):
        if "salesperson" in attrs:
            check_assignable(self.user, attrs["salesperson"], "salesperson", none_ok=True)
        elif self.instance is None and self.user is not None:
            attrs["salesperson"] = self.user
        customer = attrs.get("customer", getattr(self.instance, "customer", None))
        people = attrs.get("people")
        if people and customer is not None and any(p.customer_id != customer.pk for p in people):
            raise serializers.ValidationError({"people": ["Every person must belong to this customer."]})
        return attrs


class TaskSerializer(CustomerChildSerializer):
    """A task on an account; a contact's follow-up is a task linked to that contact."""

    contact = RefField(Contact, required=False, allow_null=True,
                       help_text="The contact whose follow-up this is (id or external_id); empty for a standalone task.")
    assigned_to = OwnerField(required=False, allow_null=True, help_text="Defaults to the caller.")
    created_by = serializers.IntegerField(source="created_by_id", read_only=True, allow_null=True)

    class Meta:
        model = Task
        fields = [
            "id", "external_id", "customer", "customer_external_id", "contact", "title", "notes", "due_on",
            "due_time", "assigned_to", "created_by", "original_due_on", "snoozed_at", "done_at", "outcome",
            "created_at", "updated_at",
        ]
        read_only_fields = [*READ_ONLY, "original_due_on", "snoozed_at"]

    def validate_due_on(self, value):
        try:
            check_due_date(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["due_on"]) from None
        return value

    def validate_title(self, value):
        if not value.strip():
            raise serializers.ValidationError("Say in a few words what is to be done.")
        return value.strip()

    def validate(self, attrs):
        if "assigned_to" in attrs:
            if self.instance is None or attrs["assigned_to"] != self.instance.assigned_to:
                check_assignable(self.user, attrs["assigned_to"], "assigned_to", none_ok=True)
        elif self.instance is None and self.user is not None:
            attrs["assigned_to"] = self.user
        customer = attrs.get("customer", getattr(self.instance, "customer", None))
        contact = attrs.get("contact", getattr(self.instance, "contact", None))
        if contact is not None and customer is not None and contact.customer_id != customer.pk:
            raise serializers.ValidationError({"contact": ["The contact must belong to this customer."]})
        return attrs


class EventSerializer(CustomerChildSerializer):
    recorded_by = serializers.IntegerField(source="recorded_by_id", read_only=True, allow_null=True)

    class Meta:
        model = Event
        fields = [
            "id", "external_id", "customer", "customer_external_id", "kind", "occurred_at", "impact", "description",
            "recorded_by", "created_at", "updated_at",
        ]
        read_only_fields = READ_ONLY


class OpportunitySerializer(ApiModelSerializer):
    """Suggestions come from the engine; a client changes only their status."""

    customer = serializers.PrimaryKeyRelatedField(read_only=True)
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True, allow_null=True)
    external_id = serializers.CharField(read_only=True, allow_null=True)
    status = serializers.ChoiceField(
        choices=[c for c in Opportunity.Status.choices if c[0] != Opportunity.Status.EXPIRED],
        help_text="open, accepted, dismissed, won or lost (only the engine expires a suggestion).",
    )

    class Meta:
        model = Opportunity
        fields = [
            "id", "external_id", "customer", "customer_external_id", "product", "from_product", "kind", "score",
            "expected_value", "evidence", "evidence_data", "status", "generated_at", "status_changed_at",
            "status_changed_by", "won_purchase", "dismiss_reason", "dismiss_note", "created_at", "updated_at",
        ]
        read_only_fields = [f for f in fields if f not in ("status", "dismiss_reason", "dismiss_note")]


class ClvRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ClvRun
        fields = [
            "id", "status", "is_current", "as_of", "started_at", "finished_at", "model", "params", "diagnostics",
            "timings", "counts", "settings", "error",
        ]
        read_only_fields = fields


class CustomerValueSerializer(serializers.ModelSerializer):
    customer_external_id = serializers.CharField(source="customer.external_id", read_only=True, allow_null=True)
    customer_name = serializers.CharField(source="customer.name", read_only=True)
    as_of = serializers.DateField(source="run.as_of", read_only=True)

    class Meta:
        model = CustomerValue
        fields = [
            "run", "as_of", "customer", "customer_external_id", "customer_name", "clv", "clv_low", "clv_high",
            "horizon_value", "horizon_value_low", "horizon_value_high", "dert", "p_alive", "expected_purchases",
            "expected_purchases_low", "expected_purchases_high", "expected_avg_value", "historical_value",
            "classic_value", "frequency", "recency", "T", "contract_value",
        ]
        read_only_fields = fields


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, style={"input_type": "password"}, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = [k for k in data if k not in self.fields]
            if unknown:
                raise serializers.ValidationError({k: ["Unknown field."] for k in unknown})
        return super().to_internal_value(data)


class TokenSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    prefix = serializers.CharField(read_only=True, help_text="The first characters of the key.")
    created_at = serializers.DateTimeField(read_only=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)


class IssuedTokenSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The key. Shown once: store it now.")


def run_validation_for(serializer: serializers.Serializer, data, *, instance=None, partial=False):
    """Validate one record with a reusable serializer (bulk: the fields are built once)."""
    serializer.instance = instance
    serializer.partial = partial
    return serializer.run_validation(data if data is not None else empty)
