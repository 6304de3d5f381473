from django.db import migrations, models


class Migration(migrations.Migration):
    # The standard networks' names come from their registry (models.networks), which
    # imports JAX: the column stops repeating them as choices.
    dependencies = [
        ("training", "0005_job_lifecycle"),
    ]

    operations = [
        migrations.AlterField(
            model_name="experiment",
            name="network",
            field=models.CharField(default="lenet", max_length=30),
        ),
    ]
