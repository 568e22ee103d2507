"""Ordered targets: their deliveries are sent one at a time, in creation order."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('djwebhooks', '0006_target_options'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='webhooktarget',
            name='ordered',
            field=models.BooleanField(default=False, help_text='Send its deliveries one at a time, in the order they were created: one that fails holds back those after it until it succeeds, fails for good or is skipped.', verbose_name='ordered'),
        ),
        migrations.AddIndex(
            model_name='delivery',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['webhook_target', 'status', 'id'], name='djwebhooks_delivery_line'),
        ),
        migrations.AddIndex(
            model_name='webhooktarget',
            index=models.Index(condition=models.Q(('ordered', True)), fields=['ordered'], name='djwebhooks_target_ordered'),
        ),
    ]
