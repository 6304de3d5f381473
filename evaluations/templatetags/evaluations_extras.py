from django import template

from evaluations import compare
from evaluations.models import Evaluation

register = template.Library()


@register.filter
def percent(value, digits=1):
    """0.9731 → "97.3%"; nothing for no value (no image was scored)."""
    if value is None or value == "":
        return "–"
    return f"{100 * float(value):.{int(digits)}f}%"


@register.inclusion_tag("evaluations/_experiment_card.html", takes_context=True)
def experiment_evaluations(context, experiment):
    """The experiment page's "Classify many" card: its evaluations this user may see."""
    user = context["request"].user
    evaluations = Evaluation.objects.visible_to(user).filter(experiment=experiment).select_related("owner")
    return {"experiment": experiment, "evaluations": evaluations, "has_snapshots": experiment.snapshots.exists()}


@register.inclusion_tag("evaluations/_compare.html", takes_context=True)
def compared_evaluations(context, experiments):
    """The compare page's evaluations of the same images, side by side: only those this user may see."""
    user = context["request"].user
    finished = (
        Evaluation.objects.visible_to(user)
        .filter(experiment__in=experiments, status=Evaluation.Status.DONE)
        .select_related("experiment")
    )
    return {"tables": compare.source_tables(experiments, finished), "metrics": compare.CLASS_METRICS}
