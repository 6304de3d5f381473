"""The API's pagination (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"]). A module of its own:
DRF reads the setting while its generic views are still being imported, so this may import
nothing that needs them."""

from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """`limit` (default PAGE_SIZE) and `offset`; the answer has the total `count`, the
    `next` and `previous` pages' URLs and the `results`."""

    max_limit = 1000
