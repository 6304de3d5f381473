from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("training", "0003_alter_experiment_owner_alter_experiment_team_and_more")]

    operations = [migrations.RenameField("experiment", "rq_job_id", "job_id")]
