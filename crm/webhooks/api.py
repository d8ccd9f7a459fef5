"""Webhooks in the API: `/api/v1/webhooks/` (subscriptions), their deliveries and redelivery.

Anyone signed in manages their own subscriptions (payloads are bounded by what they may see);
admins see and manage every subscription. The secret is in the creation response only.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from crm.api.pagination import ApiCursorPagination
from crm.webhooks import dispatch
from crm.webhooks.models import EVENT_TYPES, WebhookAttempt, WebhookDelivery, WebhookSubscription


class SubscriptionSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES), allow_empty=False)
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = WebhookSubscription
        fields = ["id", "name", "url", "event_types", "value_threshold", "is_active", "owner", "created_at",
                  "disabled_at", "disabled_reason", "consecutive_failures", "last_success_at"]
        read_only_fields = ["id", "owner", "created_at", "disabled_at", "disabled_reason", "consecutive_failures",
                            "last_success_at"]

    def validate_url(self, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise serializers.ValidationError("Give an http:// or https:// address.")
        return value


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once: keep it to verify signatures.")

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "at", "status_code", "duration_ms", "error"]


class DeliverySerializer(serializers.ModelSerializer):
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = ["id", "event_id", "event_type", "object_id", "status", "attempts", "last_status_code",
                  "created_at", "delivered_at", "payload", "attempt_log"]


def _validation(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})


class SubscriptionListView(GenericAPIView):
    serializer_class = SubscriptionSerializer
    queryset = WebhookSubscription.objects.none()  # for the schema; requests use get_queryset

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookSubscription.objects.none()
        return dispatch.subscriptions_visible_to(self.request.user).order_by("id")

    @extend_schema(operation_id="webhooks_list", responses=SubscriptionSerializer(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(SubscriptionSerializer(page, many=True).data)

    @extend_schema(responses={201: SubscriptionCreatedSerializer})
    def post(self, request):
        serializer = SubscriptionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            subscription = dispatch.subscription_create(
                owner=request.user, name=data["name"], url=data["url"], event_types=data["event_types"],
                value_threshold=data.get("value_threshold"),
            )
        except DjangoValidationError as exc:
            raise _validation(exc) from None
        return Response(SubscriptionCreatedSerializer(subscription).data, status=status.HTTP_201_CREATED,
                        headers={"Location": f"{request.path}{subscription.pk}/"})


class SubscriptionDetailView(GenericAPIView):
    serializer_class = SubscriptionSerializer
    queryset = WebhookSubscription.objects.none()

    def get_object(self):
        pk = self.kwargs["pk"]
        subscription = dispatch.subscriptions_visible_to(self.request.user).filter(pk=pk).first()
        if subscription is None:
            raise Http404
        return subscription

    def get(self, request, pk: int):
        return Response(SubscriptionSerializer(self.get_object()).data)

    def patch(self, request, pk: int):
        subscription = self.get_object()
        serializer = SubscriptionSerializer(subscription, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            subscription = dispatch.subscription_update(subscription=subscription, data=serializer.validated_data)
        except DjangoValidationError as exc:
            raise _validation(exc) from None
        return Response(SubscriptionSerializer(subscription).data)

    def delete(self, request, pk: int):
        self.get_object().delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class NewestFirst(ApiCursorPagination):
    ordering = "-id"


class DeliveryListView(GenericAPIView):
    """The delivery log of one subscription, newest first, with every attempt."""

    serializer_class = DeliverySerializer
    pagination_class = NewestFirst
    queryset = WebhookDelivery.objects.none()

    def get_queryset(self):
        subscription = dispatch.subscriptions_visible_to(self.request.user).filter(pk=self.kwargs["pk"]).first()
        if subscription is None:
            raise Http404
        return subscription.deliveries.prefetch_related("attempt_log").order_by("-id")

    def get(self, request, pk: int):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class RedeliverView(GenericAPIView):
    """Send a delivery again, with a fresh timestamp and signature."""

    serializer_class = DeliverySerializer

    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request, pk: int, delivery_id: int):
        delivery = WebhookDelivery.objects.filter(
            pk=delivery_id, subscription__in=dispatch.subscriptions_visible_to(request.user).filter(pk=pk)
        ).first()
        if delivery is None:
            raise Http404
        delivery = dispatch.delivery_redeliver(delivery=delivery)
        delivery.refresh_from_db()
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
