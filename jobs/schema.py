"""The API's OpenAPI generator (REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]) and the one error
shape it documents on every operation. A module of its own: DRF and drf-spectacular read
the setting while API modules are still being imported."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(
        help_text="What went wrong, in plain words: the general message, then each field's messages after its name."
    )
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="The messages for each field of the request, by the field's name; empty when no field is to blame.",
    )


class Schema(AutoSchema):
    """Documents the error shape on every operation, with the statuses it may answer."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes = {"401": "Not authenticated: send `Authorization: Token <key>` or log in."}
        if "{" in self.path:
            codes["404"] = "No such object, or one this user may not see."
        if self.method in ("POST", "PATCH", "PUT") or self._is_list_view():
            codes["400"] = "The request is not valid: the messages say why, field by field."
        if self.method in ("POST", "PATCH", "PUT") and "{" in self.path:
            codes["403"] = "This user may see the object but not change it."
        for code, description in codes.items():
            if code not in responses:
                responses[code] = {**self._get_response_for_code(ErrorSerializer, code), "description": description}
        return responses
