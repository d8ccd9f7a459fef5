"""Admin for customers, products, the four facets and opportunities."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.forms.models import BaseInlineFormSet

from clv.summary import summary_apply, summary_apply_product
from crm.models import Contact, Customer, Event, Holding, Opportunity, Person, Product, Purchase, Tombstone, Usage
from crm.services import customer_and_owner, record_delete, record_moved, view_field


class SyncedAdmin(admin.ModelAdmin):
    """Deletions from the admin go through the service, so they reach the deletion log too; so does
    a record moved to another customer, or a customer given to another owner (record_moved)."""

    def save_model(self, request, obj, form, change):
        before = None
        if change and view_field(type(obj)) in form.changed_data:
            before = customer_and_owner(type(obj).objects.get(pk=obj.pk))
        super().save_model(request, obj, form, change)
        if before is not None:
            record_moved(instance=obj, before=before)

    def delete_model(self, request, obj):
        record_delete(instance=obj, deleted_by=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            record_delete(instance=obj, deleted_by=request.user)


class PersonInlineFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        primaries = [form for form in self.forms if form.cleaned_data.get("is_primary")
                     and not form.cleaned_data.get("DELETE")]
        if len(primaries) > 1:
            raise ValidationError("Only one person can be the primary contact.")


class PersonInlineForm(forms.ModelForm):
    """A person whose personal data was erased on request (crm/privacy.py) stays as erased: every
    field of their row is shown and not editable (a disabled field keeps its stored value
    whatever is posted), as crm.services.person_update refuses to edit them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and self.instance.erased_at is not None:
            for field in self.fields.values():
                field.disabled = True


class PersonInline(admin.TabularInline):
    model = Person
    form = PersonInlineForm
    formset = PersonInlineFormSet
    fields = ("first_name", "last_name", "job_title", "dmu_role", "email", "phone", "is_primary", "is_active",
              "erased_at")
    readonly_fields = ("erased_at",)
    extra = 0


class HoldingInline(admin.TabularInline):
    model = Holding
    fields = ("product", "quantity", "since", "until", "status")
    autocomplete_fields = ("product",)
    extra = 0
    show_change_link = True


class RecentRowsInline(admin.TabularInline):
    """An inline that shows the newest rows only, so a long history stays readable."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


class PurchaseInline(RecentRowsInline):
    model = Purchase
    fields = ("purchased_at", "product", "quantity", "unit_price", "amount", "order_ref")
    readonly_fields = fields


class ContactInline(RecentRowsInline):
    model = Contact
    fields = ("occurred_at", "channel", "direction", "subject", "salesperson", "follow_up_on")
    readonly_fields = fields


class EventInline(RecentRowsInline):
    model = Event
    fields = ("occurred_at", "kind", "impact", "description")
    readonly_fields = fields


class OpportunityInline(RecentRowsInline):
    model = Opportunity
    fk_name = "customer"
    fields = ("kind", "product", "status", "score", "expected_value", "evidence")
    readonly_fields = fields


@admin.register(Customer)
class CustomerAdmin(SyncedAdmin):
    list_display = ("name", "kind", "owner", "relationship_type", "lifecycle_stage", "acquired_on", "external_id")
    list_filter = ("lifecycle_stage", "relationship_type", "kind", "owner__team", "owner")
    search_fields = ("name", "external_id", "email", "city")
    autocomplete_fields = ("owner",)
    list_select_related = ("owner",)
    date_hierarchy = "acquired_on"
    readonly_fields = ("created_at", "updated_at")
    inlines = [PersonInline, HoldingInline, PurchaseInline, ContactInline, EventInline, OpportunityInline]


@admin.register(Person)
class PersonAdmin(SyncedAdmin):
    list_display = ("__str__", "customer", "job_title", "dmu_role", "email", "is_primary", "is_active")
    list_filter = ("dmu_role", "is_primary", "is_active")
    search_fields = ("first_name", "last_name", "email", "customer__name", "external_id")
    autocomplete_fields = ("customer",)
    list_select_related = ("customer",)
    readonly_fields = ("erased_at",)

    def has_change_permission(self, request, obj=None):
        # An erased person is shown, not edited (the admin's read-only view), as person_update refuses.
        if obj is not None and obj.erased_at is not None:
            return False
        return super().has_change_permission(request, obj)


@admin.register(Product)
class ProductAdmin(SyncedAdmin):
    list_display = (
        "sku", "name", "family", "category", "tier", "list_price", "unit_cost", "capacity_per_unit", "capacity_unit",
        "renewal_period", "period_price", "is_active",
    )
    list_filter = ("category", "family", "tier", "renewal_period", "is_active")
    search_fields = ("sku", "name", "family", "category", "external_id")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "unit_cost" in form.changed_data:  # margins of lines that take the product's cost
            summary_apply_product(product_id=obj.pk)


@admin.register(Purchase)
class PurchaseAdmin(SyncedAdmin):
    list_display = ("purchased_at", "customer", "product", "quantity", "unit_price", "amount", "order_ref")
    list_filter = ("product__family", "product")
    search_fields = ("customer__name", "order_ref", "external_id", "product__sku")
    autocomplete_fields = ("customer", "product")
    list_select_related = ("customer", "product")
    date_hierarchy = "purchased_at"
    show_full_result_count = False

    # Edits here bypass crm.services, so they keep the CLV purchase summary current themselves.
    def save_model(self, request, obj, form, change):
        before = Purchase.objects.filter(pk=obj.pk).values_list("customer_id", flat=True).first() if change else None
        super().save_model(request, obj, form, change)
        summary_apply(customer_ids=[before, obj.customer_id])

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        summary_apply(customer_ids=[obj.customer_id])

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        customer_ids = set(queryset.values_list("customer_id", flat=True))
        super().delete_queryset(request, queryset)
        summary_apply(customer_ids=customer_ids)


class UsageInline(admin.TabularInline):
    model = Usage
    fields = ("period_start", "period_end", "used", "capacity", "satisfaction", "nps", "note")
    extra = 0


@admin.register(Holding)
class HoldingAdmin(SyncedAdmin):
    list_display = ("customer", "product", "quantity", "since", "until", "status")
    list_filter = ("status", "product__family", "product")
    search_fields = ("customer__name", "product__sku", "external_id")
    autocomplete_fields = ("customer", "product")
    list_select_related = ("customer", "product")
    inlines = [UsageInline]


@admin.register(Usage)
class UsageAdmin(SyncedAdmin):
    list_display = ("holding", "period_start", "period_end", "used", "capacity", "satisfaction", "nps")
    list_filter = ("holding__product",)
    search_fields = ("holding__customer__name", "holding__product__sku", "external_id")
    raw_id_fields = ("holding",)
    list_select_related = ("holding__customer", "holding__product")
    date_hierarchy = "period_start"


@admin.register(Contact)
class ContactAdmin(SyncedAdmin):
    list_display = ("occurred_at", "customer", "channel", "direction", "subject", "salesperson", "follow_up_on")
    list_filter = ("channel", "direction", "salesperson")
    search_fields = ("customer__name", "subject", "notes", "external_id")
    autocomplete_fields = ("customer", "salesperson")
    filter_horizontal = ("people",)
    list_select_related = ("customer", "salesperson")
    date_hierarchy = "occurred_at"


@admin.register(Event)
class EventAdmin(SyncedAdmin):
    list_display = ("occurred_at", "customer", "kind", "impact", "description")
    list_filter = ("kind", "impact")
    search_fields = ("customer__name", "description", "external_id")
    autocomplete_fields = ("customer",)
    list_select_related = ("customer",)
    date_hierarchy = "occurred_at"


@admin.register(Opportunity)
class OpportunityAdmin(SyncedAdmin):
    list_display = ("customer", "kind", "product", "status", "score", "expected_value", "generated_at")
    list_filter = ("kind", "status", "product__family")
    search_fields = ("customer__name", "product__sku", "evidence")
    autocomplete_fields = ("customer", "product", "from_product")
    raw_id_fields = ("won_purchase",)
    list_select_related = ("customer", "product")


@admin.register(Tombstone)
class TombstoneAdmin(admin.ModelAdmin):
    list_display = ("model", "object_id", "external_id", "deleted_at", "deleted_by")
    list_filter = ("model",)
    search_fields = ("external_id",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
