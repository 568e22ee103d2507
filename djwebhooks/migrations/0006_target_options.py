"""Each target's own headers, timeout and retry schedule."""

from django.db import migrations, models

import djwebhooks.models


class Migration(migrations.Migration):

    dependencies = [
        ('djwebhooks', '0005_delivery_due_notify'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhooktarget',
            name='headers',
            field=models.JSONField(blank=True, default=dict, help_text='Sent with every request, such as Authorization or X-Api-Key. Shown masked, like the secret.', validators=[djwebhooks.models.validate_headers], verbose_name='headers'),
        ),
        migrations.AddField(
            model_name='webhooktarget',
            name='retry_schedule',
            field=models.JSONField(blank=True, help_text="Waits before each retry, in seconds; the sender's RETRY_SCHEDULE applies when empty, and an empty list means no retries.", null=True, validators=[djwebhooks.models.validate_schedule], verbose_name='retry schedule'),
        ),
        migrations.AddField(
            model_name='webhooktarget',
            name='timeout',
            field=models.FloatField(blank=True, help_text="Seconds a request may take, from looking up the host to the last byte of the answer; at most the sender's TOTAL_TIMEOUT, which applies when empty.", null=True, verbose_name='timeout'),
        ),
    ]
