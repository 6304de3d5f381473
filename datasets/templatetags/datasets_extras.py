from django import template

from datasets.grouping import group_by_team

register = template.Library()


@register.filter
def by_team(datasets):
    return group_by_team(datasets)


@register.filter
def megabytes(count):
    return f"{(count or 0) / 1e6:,.1f} MB"
