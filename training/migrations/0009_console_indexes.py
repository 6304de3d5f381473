# The index of the console's and the API's lists (see experiment's Meta).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0008_job_waiting"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="experiment",
            index=models.Index(fields=["-created", "-id"], name="experiment_console_by_created"),
        ),
    ]
