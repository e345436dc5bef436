# The task index moved to the portal app (portal 0001_task): only the migration state moves,
# the table ``cluster_task`` and its rows stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('cluster', '0006_node_joining'),
        ('portal', '0001_task'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='Task',
                ),
            ],
            database_operations=[],
        ),
    ]
