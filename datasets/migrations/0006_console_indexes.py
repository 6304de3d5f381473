# The index of the console's and the API's lists (see dataset's Meta).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0005_job_waiting"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="dataset",
            index=models.Index(fields=["-created", "-id"], name="dataset_console_by_created"),
        ),
    ]
