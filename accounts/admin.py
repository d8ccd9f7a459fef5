"""Admin for users and teams."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import Team, User


class MemberInline(admin.TabularInline):
    model = User
    fields = ("username", "first_name", "last_name", "role", "is_active")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "manager")
    search_fields = ("name", "manager__username")
    autocomplete_fields = ("manager",)
    inlines = [MemberInline]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "get_full_name", "email", "role", "team", "is_active")
    list_filter = ("role", "team", "is_active", "is_staff")
    fieldsets = BaseUserAdmin.fieldsets + (("Sales role", {"fields": ("role", "team")}),)
    add_fieldsets = BaseUserAdmin.add_fieldsets + (("Sales role", {"fields": ("role", "team")}),)
