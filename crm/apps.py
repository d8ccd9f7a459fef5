"""App config for customers, their four lifetime facets and opportunities."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_delete, pre_save


def _reinstall_change_triggers(sender, using, **kwargs):
    """Keep the change feed's triggers in place after every migrate.

    SQLite rebuilds a table (dropping its triggers) for many schema changes, and a new
    column must join the update trigger's column list; re-creating them is cheap and safe.
    """
    from django.db import connections

    from crm.sync import install_change_triggers

    connection = connections[using]
    tables = connection.introspection.table_names()
    if "crm_customer" in tables:
        install_change_triggers(connection)
    if "crm_webhookoutboxevent" in tables:
        from crm.webhooks.outbox import install_outbox_trigger

        install_outbox_trigger(connection)


class CrmConfig(AppConfig):
    name = "crm"
    verbose_name = "CRM"

    def ready(self):
        from accounts.models import Team, User
        from crm import sync

        post_migrate.connect(_reinstall_change_triggers, sender=self, dispatch_uid="crm-change-triggers")
        # Sync cursors of users whose view of the customers changes as a whole expire (crm.sync).
        pre_save.connect(sync.user_view_changing, sender=User, dispatch_uid="crm-sync-user-view")
        pre_save.connect(sync.team_manager_changing, sender=Team, dispatch_uid="crm-sync-team-manager")
        pre_delete.connect(sync.team_deleting, sender=Team, dispatch_uid="crm-sync-team-delete")
