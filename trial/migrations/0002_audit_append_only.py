"""Make the audit table append-only in the database itself and create the
chain head. Any later migration that rebuilds trial_auditevent on SQLite
(Django copies the table for most ALTERs there) must install the triggers
again."""

from django.db import migrations

from trial.audit import GENESIS_HASH, install_protection, remove_protection


def forwards(apps, schema_editor):
    install_protection(schema_editor, schema_editor.connection.vendor)
    head = apps.get_model("trial", "AuditChainHead")
    head.objects.get_or_create(id=1, defaults={"last_sequence": 0, "last_hash": GENESIS_HASH})


def backwards(apps, schema_editor):
    remove_protection(schema_editor, schema_editor.connection.vendor)


class Migration(migrations.Migration):
    dependencies = [("trial", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
