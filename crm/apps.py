"""App config for customers, their four lifetime facets and opportunities."""

from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"
