"""Pacing: a cap on each target's requests at once, and a rate limit shared by every worker."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('djwebhooks', '0007_ordered'),
    ]

    operations = [
        migrations.CreateModel(
            name='RateBucket',
            fields=[
                ('target', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='djwebhooks.webhooktarget', verbose_name='target')),
                ('busy_until', models.DateTimeField(verbose_name='busy until')),
            ],
            options={
                'verbose_name': 'rate bucket',
                'verbose_name_plural': 'rate buckets',
            },
        ),
        migrations.AddField(
            model_name='webhooktarget',
            name='max_in_flight',
            field=models.PositiveIntegerField(blank=True, help_text="The most requests each sending process makes to it at once; fewer while it answers 429, 502, 503 or 504 or times out. The sender's MAX_IN_FLIGHT applies when empty.", null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(1000)], verbose_name='most requests at once'),
        ),
        migrations.AddField(
            model_name='webhooktarget',
            name='rate_limit',
            field=models.PositiveIntegerField(blank=True, help_text='The most requests a second, counted across every worker; no limit when empty.', null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(10000)], verbose_name='rate limit'),
        ),
    ]
