"""App config for customers, their four lifetime facets and opportunities."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _reinstall_change_triggers(sender, using, **kwargs):
    """Keep the change feed's triggers in place after every migrate.

    SQLite rebuilds a table (dropping its triggers) for many schema changes, and a new
    column must join the update trigger's column list; re-creating them is cheap and safe.
    """
    from django.db import connections

    from crm.sync import install_change_triggers

    connection = connections[using]
    if "crm_customer" in connection.introspection.table_names():
        install_change_triggers(connection)


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"

    def ready(self):
        post_migrate.connect(_reinstall_change_triggers, sender=self, dispatch_uid="crm-change-triggers")
