"""Admin for CLV runs and their stored values."""

from django.contrib import admin

from clv.models import ClvRun, CustomerValue, HoldingValue, PortfolioSnapshot


@admin.register(ClvRun)
class ClvRunAdmin(admin.ModelAdmin):
    list_display = ("id", "as_of", "status", "is_current", "model", "started_at", "finished_at")
    list_filter = ("status", "is_current", "model")
    readonly_fields = [f.name for f in ClvRun._meta.fields]


@admin.register(CustomerValue)
class CustomerValueAdmin(admin.ModelAdmin):
    list_display = ("customer", "run", "clv", "contract_value", "p_alive", "expected_purchases", "historical_value")
    list_filter = ("run",)
    search_fields = ("customer__name", "customer__external_id")
    raw_id_fields = ("customer", "run")
    list_select_related = ("customer", "run")
    show_full_result_count = False


@admin.register(PortfolioSnapshot)
class PortfolioSnapshotAdmin(admin.ModelAdmin):
    list_display = ("run", "owner", "customers", "total_clv", "at_risk_customers", "value_at_risk")
    list_filter = ("run",)


@admin.register(HoldingValue)
class HoldingValueAdmin(admin.ModelAdmin):
    list_display = ("holding", "customer", "run", "segment", "model", "periods", "next_renewal", "p_renew",
                    "residual_value", "value_at_stake")
    list_filter = ("run", "model", "segment")
    search_fields = ("customer__name", "customer__external_id", "holding__external_id")
    raw_id_fields = ("holding", "customer", "run")
    list_select_related = ("holding__product", "customer", "run")
    show_full_result_count = False
