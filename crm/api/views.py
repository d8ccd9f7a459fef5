"""The resources of API v1: thin viewsets over services and selectors."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db import connection
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiToken
from accounts.tokens import TooManyTokens, token_issue, token_revoke
from clv.models import ClvRun, CustomerValue
from crm import privacy, services, sync
from crm.api import serializers as s
from crm.api.filters import (
    ClvRunFilter,
    ContactFilter,
    CustomerFilter,
    CustomerValueFilter,
    EventFilter,
    HoldingFilter,
    OpportunityFilter,
    PersonFilter,
    ProductFilter,
    PurchaseFilter,
    TaskFilter,
    UsageFilter,
)
from crm.api.problems import Conflict, Gone, NotOnThisDatabase
from crm.api.throttling import ApiThrottle, LoginThrottle, LoginUsernameThrottle
from crm.api.viewsets import LOOKUP, SyncedViewSet
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Task, Usage


class CatalogueWrites(permissions.BasePermission):
    """Everyone reads the catalogue; admins change it."""

    message = "Only admins change the product catalogue."

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or request.user.sees_everything


class AdminsOnly(permissions.BasePermission):
    """Personal-data requests (export, erasure): admins only."""

    message = "Only admins handle personal-data requests."

    def has_permission(self, request, view):
        return privacy.may_handle_personal_data(request.user)


PERSONAL_DATA = inline_serializer("PersonalData", {
    "generated_at": serializers.DateTimeField(),
    "generated_by": serializers.CharField(),
    "person": serializers.DictField(help_text="The person's fields and their customer (id, external_id, name)."),
    "contacts": serializers.ListField(child=serializers.DictField(), help_text="Contacts they took part in."),
    "tasks": serializers.ListField(child=serializers.DictField(),
                                   help_text="Follow-ups of those contacts and tasks naming them."),
    "history_recorded": serializers.BooleanField(),
    "history": serializers.ListField(child=serializers.DictField(), help_text="Their change-history rows."),
    "webhook_deliveries": serializers.ListField(child=serializers.DictField(),
                                                help_text="Webhook deliveries about them (no payloads)."),
})
ERASURE = inline_serializer("PersonErasure", {
    "person": serializers.IntegerField(),
    "erased_at": serializers.DateTimeField(),
    "already_erased": serializers.BooleanField(help_text="True when the person had been erased before."),
    "scrubbed": serializers.DictField(child=serializers.IntegerField(),
                                      help_text="Copies scrubbed: history_rows, webhook_deliveries, api_replies, "
                                                "admin_log."),
})


class CustomerDeletes(permissions.BasePermission):
    """Deleting a customer removes its whole history: managers and admins only."""

    message = "Only managers and admins delete customers."

    def has_object_permission(self, request, view, obj):  # after the lookup: invisible ones stay 404
        return request.method != "DELETE" or request.user.is_manager or request.user.sees_everything


class CustomerViewSet(SyncedViewSet):
    """Customers: the accounts, with their owner and lifecycle stage."""

    model = Customer
    serializer_class = s.CustomerSerializer
    filterset_class = CustomerFilter
    ordering_fields = ["id", "updated_at", "created_at", "name"]
    permission_classes = [permissions.IsAuthenticated, CustomerDeletes]

    def perform_create_record(self, data):
        return services.customer_create(**data)

    @extend_schema(parameters=[LOOKUP], responses=s.CustomerValueSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def values(self, request, *args, **kwargs):
        """The customer's value in every successful CLV run, newest first (for trends)."""
        customer = self.get_object()
        rows = (
            CustomerValue.objects.filter(customer=customer, run__status=ClvRun.Status.SUCCEEDED)
            .select_related("run", "customer").order_by("-run__as_of", "-run_id")[:500]
        )
        return Response(s.CustomerValueSerializer(rows, many=True).data)


class PersonViewSet(SyncedViewSet):
    """People of the customer's decision-making unit."""

    model = Person
    serializer_class = s.PersonSerializer
    filterset_class = PersonFilter
    select_related = ("customer",)
    ordering_fields = ["id", "updated_at", "created_at", "last_name"]

    def perform_create_record(self, data):
        return services.person_add(**data)

    def perform_update_record(self, instance, data):
        return services.person_update(person=instance, data=data)[0]

    @extend_schema(parameters=[LOOKUP], responses={200: PERSONAL_DATA},
                   description="Everything held about the person, for a personal-data request (admins only).")
    @action(detail=True, methods=["get"], url_path="personal-data",
            permission_classes=[permissions.IsAuthenticated, AdminsOnly])
    def personal_data(self, request, *args, **kwargs):
        return Response(privacy.person_personal_data(person=self.get_object(), requested_by=request.user))

    @extend_schema(parameters=[LOOKUP], request=None, responses={200: ERASURE},
                   description="Erase the person's personal data (admins only): the record stays, anonymised, "
                               "with its contacts; history and webhook payloads are scrubbed and sync clients "
                               "receive the anonymised record. Erasing again changes nothing.")
    @action(detail=True, methods=["post"], url_path="erase", permission_classes=[permissions.IsAuthenticated, AdminsOnly])
    def erase(self, request, *args, **kwargs):
        return Response(privacy.person_erase(person=self.get_object(), erased_by=request.user))


class ProductViewSet(SyncedViewSet):
    """The product catalogue (admins write)."""

    model = Product
    serializer_class = s.ProductSerializer
    filterset_class = ProductFilter
    permission_classes = [permissions.IsAuthenticated, CatalogueWrites]
    ordering_fields = ["id", "updated_at", "created_at", "sku"]

    def base_queryset(self):
        return Product.objects.all()


class PurchaseViewSet(SyncedViewSet):
    """Purchase lines: the holdings facet's history, and what the CLV models are fitted on."""

    model = Purchase
    serializer_class = s.PurchaseSerializer
    filterset_class = PurchaseFilter
    select_related = ("customer",)
    ordering_fields = ["id", "updated_at", "created_at", "purchased_at"]

    def perform_create_record(self, data):
        return services.purchase_record(**data)


class HoldingViewSet(SyncedViewSet):
    """What each customer holds now (and held)."""

    model = Holding
    serializer_class = s.HoldingSerializer
    filterset_class = HoldingFilter
    select_related = ("customer",)


class UsageViewSet(SyncedViewSet):
    """How each holding is used, period by period."""

    model = Usage
    serializer_class = s.UsageSerializer
    filterset_class = UsageFilter
    ordering_fields = ["id", "updated_at", "created_at", "period_start"]


class ContactViewSet(SyncedViewSet):
    """Interactions with the people of the decision-making unit."""

    model = Contact
    serializer_class = s.ContactSerializer
    filterset_class = ContactFilter
    select_related = ("customer",)
    prefetch_related = ("people",)
    ordering_fields = ["id", "updated_at", "created_at", "occurred_at"]

    def perform_create_record(self, data):
        return services.contact_log(**data)


class TaskViewSet(SyncedViewSet):
    """Tasks and contact follow-ups: what a salesperson must do on an account, by a day."""

    model = Task
    serializer_class = s.TaskSerializer
    filterset_class = TaskFilter
    select_related = ("customer",)
    ordering_fields = ["id", "updated_at", "created_at", "due_on"]

    def perform_create_record(self, data):
        return services.task_create(**data, created_by=self.request.user)

    def perform_update_record(self, instance, data):
        return services.task_update(task=instance, data=data)


class EventViewSet(SyncedViewSet):
    """What happens in the customer's life or business."""

    model = Event
    serializer_class = s.EventSerializer
    filterset_class = EventFilter
    select_related = ("customer",)
    ordering_fields = ["id", "updated_at", "created_at", "occurred_at"]

    def perform_create_record(self, data):
        return services.event_record(**data, recorded_by=self.request.user)


class OpportunityViewSet(SyncedViewSet):
    """Cross-sell and up-sell suggestions with their evidence; a client changes their status."""

    model = Opportunity
    serializer_class = s.OpportunitySerializer
    filterset_class = OpportunityFilter
    select_related = ("customer",)
    ordering_fields = ["id", "updated_at", "created_at", "score"]
    http_method_names = ["get", "patch", "head", "options"]

    def perform_update_record(self, instance, data):
        status = data.get("status", instance.status)
        reason = data.get("dismiss_reason", instance.dismiss_reason)
        note = data.get("dismiss_note", instance.dismiss_note)
        if (status, reason, note) != (instance.status, instance.dismiss_reason, instance.dismiss_note):
            return services.opportunity_set_status(
                opportunity=instance, status=status, user=self.request.user, dismiss_reason=reason, dismiss_note=note
            )
        return instance


# Bulk is for synced facts; suggestions are not created by clients.
OpportunityViewSet.bulk = None


class CustomerValueViewSet(viewsets.ReadOnlyModelViewSet):
    """Lifetime values: of the current CLV run, or of the run given by `?run=`."""

    serializer_class = s.CustomerValueSerializer
    filterset_class = CustomerValueFilter
    ordering_fields = ["customer", "clv", "p_alive"]
    ordering = "customer"

    @extend_schema(parameters=[OpenApiParameter("run", int, description="A run id; default: the current run.")])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        run = self.request.query_params.get("run")
        qs = CustomerValue.objects.filter(customer__in=Customer.objects.visible_to(self.request.user))
        if run is None:
            qs = qs.filter(run__is_current=True)
        elif run.isdigit() and 0 < int(run) < 2**63:
            status = ClvRun.objects.filter(pk=int(run)).values_list("status", flat=True).first()
            if status is not None and status != ClvRun.Status.SUCCEEDED:
                # A running sharded run has some of its values written, a failed one may have had:
                # only a run that succeeded as a whole is ever read.
                raise exceptions.ValidationError(
                    {"run": [f"Run {run} is {status}: only the values of a run that succeeded can be read."]}
                )
            qs = qs.filter(run_id=int(run), run__status=ClvRun.Status.SUCCEEDED)
        else:
            raise exceptions.ValidationError({"run": ["Give a run id."]})
        return qs.select_related("run", "customer")

    def get_object(self):
        return get_object_or_404(self.get_queryset(), customer_id=self._customer_id())

    def _customer_id(self) -> int:
        value = self.kwargs["pk"]
        if value.isascii() and value.isdigit() and 0 < int(value) < 2**63:
            return int(value)
        raise exceptions.NotFound()

    lookup_value_regex = r"[^/]+"

    @extend_schema(parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="The customer id.")])
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)


class ManagersOnly(permissions.BasePermission):
    """Whole-book figures (CLV runs: counts, holdout totals, diagnostics): managers and admins."""

    message = "Only managers and admins see CLV runs; your customers' values are at /api/v1/values/."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and (user.is_manager or user.sees_everything))


class ClvRunViewSet(viewsets.ReadOnlyModelViewSet):
    """CLV runs (managers and admins): when, on what data, with which model, parameters, diagnostics and timings."""

    permission_classes = [permissions.IsAuthenticated, ManagersOnly]
    serializer_class = s.ClvRunSerializer
    filterset_class = ClvRunFilter
    queryset = ClvRun.objects.all()
    ordering_fields = ["id", "as_of", "started_at"]
    ordering = "-id"


# --- sync ---------------------------------------------------------------------------------

CHANGES = inline_serializer(
    "Change",
    {
        "type": serializers.ChoiceField(choices=list(sync.FEED_TYPES)),
        "op": serializers.ChoiceField(choices=["created", "updated", "deleted"]),
        "id": serializers.IntegerField(),
        "external_id": serializers.CharField(allow_null=True),
        "data": serializers.DictField(allow_null=True, help_text="The record as its resource shows it; null for a deletion."),
        "deleted_at": serializers.DateTimeField(required=False),
        "reason": serializers.ChoiceField(
            choices=["deleted", "moved"], required=False,
            help_text="For a deletion: deleted, or moved out of your view (to a customer or owner you cannot see).",
        ),
    },
    many=True,
)

FEED_SERIALIZERS = {
    "customers": (s.CustomerSerializer, ()),
    "people": (s.PersonSerializer, ("customer",)),
    "products": (s.ProductSerializer, ()),
    "purchases": (s.PurchaseSerializer, ("customer",)),
    "holdings": (s.HoldingSerializer, ("customer",)),
    "usage": (s.UsageSerializer, ()),
    "contacts": (s.ContactSerializer, ("customer",)),
    "tasks": (s.TaskSerializer, ("customer",)),
    "events": (s.EventSerializer, ("customer",)),
    "opportunities": (s.OpportunitySerializer, ("customer",)),
}


class SyncChangesView(APIView):
    """Changes since a cursor: creations, updates and deletions, in commit-safe order."""

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str, description="The next_cursor of the previous page; none to start from scratch."),
            OpenApiParameter("types", str, description=f"Comma-separated, of: {', '.join(sync.FEED_TYPES)}. Default: all."),
            OpenApiParameter("limit", int, description="Changes per page (default 500, at most 1,000)."),
        ],
        responses=inline_serializer(
            "ChangePage",
            {
                "changes": CHANGES,
                "next_cursor": serializers.CharField(),
                "has_more": serializers.BooleanField(),
            },
        ),
    )
    def get(self, request):
        params = request.query_params
        types = [t.strip() for t in params.get("types", "").split(",") if t.strip()] or list(sync.FEED_TYPES)
        unknown = [t for t in types if t not in sync.FEED_TYPES]
        if unknown:
            raise exceptions.ValidationError({"types": [f"Unknown type(s): {', '.join(unknown)}."]})
        try:
            limit = min(max(int(params.get("limit", 500)), 1), 1000)
        except ValueError:
            raise exceptions.ValidationError({"limit": ["Give a number from 1 to 1000."]}) from None
        cursor = None
        if params.get("cursor"):
            try:
                cursor = sync.Cursor.decode(params["cursor"])
            except sync.CursorError as exc:
                raise exceptions.ValidationError({"cursor": [str(exc)]}) from None

        def prepare(name, qs):
            related = FEED_SERIALIZERS[name][1]
            qs = qs.select_related(*related) if related else qs
            return qs.prefetch_related("people") if name == "contacts" else qs

        try:
            page = sync.changes_since(user=request.user, types=types, cursor=cursor, limit=limit, prepare=prepare)
        except sync.CursorExpired as exc:
            raise Gone(str(exc)) from None
        context = {"request": request}
        changes = []
        for change in page.changes:
            if change.op == "deleted":
                t = change.tombstone
                changes.append({"type": change.type, "op": "deleted", "id": t.object_id, "external_id": t.external_id,
                                "data": None, "deleted_at": t.deleted_at, "reason": t.reason})
            else:
                serializer_class = FEED_SERIALIZERS[change.type][0]
                obj = change.instance
                changes.append({"type": change.type, "op": change.op, "id": obj.pk, "external_id": obj.external_id,
                                "data": serializer_class(obj, context=context).data})
        return Response({"changes": changes, "next_cursor": page.cursor.encode(), "has_more": page.has_more})


# --- tokens -------------------------------------------------------------------------------


class TokenView(APIView):
    """Get a token with a username and password; revoke the token you are using."""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [LoginThrottle, LoginUsernameThrottle]

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [permissions.IsAuthenticated()]
        return super().get_permissions()

    def get_throttles(self):
        if self.request.method == "DELETE":  # revoking is not guessing: the ordinary API budget
            return [ApiThrottle()]
        return super().get_throttles()

    @extend_schema(request=s.TokenRequestSerializer, responses={201: s.IssuedTokenSerializer}, auth=[])
    def post(self, request):
        serializer = s.TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("Wrong username or password.")
        try:
            token, key = token_issue(user=user, name=data["name"])
        except TooManyTokens as exc:
            raise Conflict(str(exc)) from None
        body = s.TokenSerializer(token).data | {"token": key}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def delete(self, request):
        if not isinstance(request.auth, ApiToken):
            raise exceptions.ValidationError({"Authorization": ["Send the token to revoke in the Authorization header."]})
        token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your tokens (never their keys); DELETE revokes one."""

    serializer_class = s.TokenSerializer
    queryset = ApiToken.objects.none()  # for the schema; requests see their own tokens only
    ordering = "-id"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user)

    def perform_destroy(self, instance):
        token_revoke(token=instance)


# --- analytics ----------------------------------------------------------------------------

ANALYTICS_QUESTIONS = {
    "product-buyers": "How many customers bought product A, and how many more than once (needs ?product=SKU).",
    "contact-frequency": "How often each customer is contacted: count, mean gap, first and last contact.",
    "valuable-not-contacted": "Valuable customers not contacted in ?days= (default 60).",
    "most-profitable": "Most profitable customers, ?by=margin (so far) or clv (predicted).",
    "events-before-loss": "Event kinds before customers are lost, with lift against the base rate.",
    "customer-products": "Customer x product purchases; ?product=SKU for one product's customers.",
    "events-before-purchase": "Event kinds before a purchase, with lift and lead time.",
    "loyalty-patterns": "Retention, frequency, mean CLV and P(alive) by relationship type and stage.",
}


class AnalyticsParams(serializers.Serializer):
    since = serializers.DateField(required=False)
    until = serializers.DateField(required=False)
    product = serializers.CharField(required=False, max_length=64, help_text="A product SKU.")
    window_days = serializers.IntegerField(required=False, min_value=1, max_value=3650)
    days = serializers.IntegerField(required=False, min_value=1, max_value=3650)
    by = serializers.ChoiceField(choices=["margin", "clv"], required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)


class AnalyticsView(APIView):
    """The salesperson's questions, answered over the customers the caller may see."""

    @extend_schema(
        parameters=[OpenApiParameter("question", str, OpenApiParameter.PATH, enum=list(ANALYTICS_QUESTIONS)),
                    AnalyticsParams],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, question: str):
        from crm import analytics as a

        if question not in ANALYTICS_QUESTIONS:
            raise exceptions.NotFound(f"No question {question!r}; see /api/v1/analytics/.")
        empty = sorted(k for k in AnalyticsParams().fields if request.query_params.get(k, None) == "")
        if empty:
            raise exceptions.ValidationError({k: ["Give a value, or leave the parameter out."] for k in empty})
        params = AnalyticsParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        p = params.validated_data
        user = request.user
        period = {"since": p.get("since"), "until": p.get("until")}
        product = p.get("product")
        if product is not None and not Product.objects.filter(sku=product).exists():
            raise exceptions.ValidationError({"product": [f"No product with SKU {product!r}."]})
        if question in ("events-before-loss", "events-before-purchase") and connection.vendor != "postgresql":
            raise NotOnThisDatabase("This question needs PostgreSQL; this server runs on SQLite.")
        limit = p.get("limit", 100)
        if question == "product-buyers":
            if product is None:
                raise exceptions.ValidationError({"product": ["Give the product's SKU."]})
            result = a.product_buyers(user, product=product, **period)
        elif question == "contact-frequency":
            result = a.contact_frequency(user, limit=limit, **period)
        elif question == "valuable-not-contacted":
            result = a.valuable_not_contacted(user, days=p.get("days", 60), limit=limit)
        elif question == "most-profitable":
            result = a.most_profitable(user, by=p.get("by", "margin"), limit=limit, **period)
        elif question == "events-before-loss":
            result = a.events_before_loss(user, window_days=p.get("window_days", 90), **period)
        elif question == "customer-products":
            result = a.customer_products(user, product=product, limit=limit, **period)
        elif question == "events-before-purchase":
            result = a.events_before_purchase(user, window_days=p.get("window_days", 60), product=product, **period)
        else:
            result = a.loyalty_patterns(user)
        return Response({"question": question, "description": ANALYTICS_QUESTIONS[question], "answer": result})


class AnalyticsIndexView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="analytics_list")
    def get(self, request):
        base = request.build_absolute_uri("/api/v1/analytics/")
        return Response({"questions": [{"question": k, "description": v, "url": f"{base}{k}/"}
                                       for k, v in ANALYTICS_QUESTIONS.items()]})

