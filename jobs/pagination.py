"""The API's pagination (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"]). A module of its own:
DRF reads the setting while its generic views are still being imported, so this may import
nothing that needs them."""

from django.db.models import QuerySet
from rest_framework.pagination import LimitOffsetPagination


def page_of(rows, start, stop):
    """Rows start..stop of a queryset, in its order: their ids first, from the bare rows,
    then those rows with what the list annotates. A database computes a row's annotations
    (a related object's visibility, the latest epoch) before it sorts, so slicing the
    annotated rows annotates every row that matched; and given the ids with the order,
    SQLite walks the order's index past every row rather than look 50 rows up. Two
    queries, whatever the length of the list."""
    ids = list(rows.values_list("pk", flat=True)[start:stop])
    found = {row.pk: row for row in rows.filter(pk__in=ids).order_by()}
    return [found[pk] for pk in ids if pk in found]


class Pagination(LimitOffsetPagination):
    """`limit` (default PAGE_SIZE) and `offset`; the answer has the total `count`, the
    `next` and `previous` pages' URLs and the `results`."""

    max_limit = 1000

    def paginate_queryset(self, queryset, request, view=None):
        if not isinstance(queryset, QuerySet):
            return super().paginate_queryset(queryset, request, view)
        # LimitOffsetPagination's own steps, with the page sliced by page_of.
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(request)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        if self.count == 0 or self.offset > self.count:
            return []
        return page_of(queryset, self.offset, self.offset + self.limit)
