# The task index moved here from the cluster app (cluster 0002_task, 0005_task_worker created
# its table): only the migration state moves, the table ``cluster_task`` and its rows stay.

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('cluster', '0006_node_joining'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Task',
                    fields=[
                        ('upid', models.CharField(max_length=255, primary_key=True, serialize=False)),
                        ('node', models.CharField(max_length=63)),
                        ('type', models.CharField(max_length=64)),
                        ('vmid', models.CharField(blank=True, default='', max_length=64)),
                        ('user', models.CharField(max_length=128)),
                        ('starttime', models.BigIntegerField()),
                        ('endtime', models.BigIntegerField(blank=True, null=True)),
                        ('status', models.CharField(default='running', max_length=16)),
                        ('exitstatus', models.CharField(blank=True, default='', max_length=4096)),
                        ('operation', models.CharField(blank=True, default='', help_text='Registered operation name.', max_length=64)),
                        ('worker', models.CharField(blank=True, default='', help_text='Celery worker that ran it.', max_length=255)),
                        ('pid', models.IntegerField(blank=True, null=True)),
                        ('pstart', models.BigIntegerField(blank=True, null=True)),
                        ('lock', models.JSONField(blank=True, help_text='The lease the task holds: kind, key, reason.', null=True)),
                    ],
                    options={
                        'db_table': 'cluster_task',
                        'ordering': ['-starttime'],
                        'indexes': [models.Index(fields=['starttime'], name='cluster_tas_startti_276b97_idx'), models.Index(fields=['status'], name='cluster_tas_status_0fb6ec_idx')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
