from evaluations.models import Evaluation
from jobs.events import GroupConsumer


class EvaluationConsumer(GroupConsumer):
    """Progress, log and status of one evaluation."""

    def get_object(self, user, pk):
        return Evaluation.objects.visible_to(user).filter(pk=pk).first()

    def current_events(self, evaluation):
        evaluation.refresh_from_db()
        return [
            evaluation.progress_event(),
            *(line.as_event() for line in evaluation.log_lines.all()),
            evaluation.status_event(),
        ]
