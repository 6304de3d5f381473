"""What every app's JSON API shares, so that an endpoint of any app answers alike:

- `api_view`: the URL entry of an APIView (token or session; no login redirect).
- One error shape, `{"detail": "…", "errors": {"field": ["message", …]}}`, from
  `exception_handler` (REST_FRAMEWORK["EXCEPTION_HANDLER"]) whatever raised it; `Conflict`
  (409) for a request the object's state refuses; `ErrorSerializer` documents it.
- Creation through the page's form: `form_data` fills in what a body left out as the
  untouched page would submit it and refuses unknown fields; `form_invalid` turns the
  form's errors into that shape, naming the valid values of a wrong choice;
  `form_serializer` describes the form's fields to the schema.
- Lists: `jobs.pagination.Pagination` (limit/offset with the total count) and `ListFilters` (the
  `filter_fields` a list view names, `search`, `ordering`), one query per page whatever
  its length as long as the view's queryset joins what its serializer reads.
- `JobLog.of(Model)`: the paged log of any job (rows under `log_lines`).
"""

import difflib
from collections.abc import Mapping

from django import forms
from django.contrib.auth.decorators import login_not_required
from django.core.files.uploadedfile import UploadedFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.choices import CallableChoiceIterator
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import exceptions, generics, serializers, status
from rest_framework.filters import BaseFilterBackend
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from accounts.access import get_visible_or_404


def api_view(view):
    # The API authenticates by token inside DRF; the login redirect is for pages only.
    return login_not_required(view.as_view())


# --- One error shape -------------------------------------------------------------------------

# Keys under which DRF and Django forms put what no single field is to blame for.
GENERAL_KEYS = ("__all__", "non_field_errors", "detail")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object's state does not allow this."
    default_code = "conflict"


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = error_body(response.data)
    return response


def error_body(data):
    general, fields = [], {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            if key in GENERAL_KEYS:
                general.extend(_messages(value))
            else:
                fields[str(key)] = _messages(value)
    else:
        general = _messages(data)
    detail = " ".join([*general, *(f"{name}: {' '.join(messages)}" for name, messages in fields.items())])
    return {"detail": detail, "errors": fields}


def _messages(value):
    if isinstance(value, Mapping):
        if "message" in value:  # a form's get_json_data() entry
            return [str(value["message"])]
        return [f"{key}: {message}" for key, inner in value.items() for message in _messages(inner)]
    if isinstance(value, list | tuple):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


# --- Creation through the page's form ---------------------------------------------------------

MAX_LISTED_CHOICES = 20


def initial_data(form_class, initial=None):
    """The data an untouched page submits: every field's initial value (or `initial`'s)."""
    data = {}
    for name, field in form_class.base_fields.items():
        value = (initial or {}).get(name, field.initial)
        if value is None or isinstance(field, forms.FileField):
            continue
        if isinstance(field, forms.BooleanField):
            data[name] = "on" if value else ""
        else:
            data[name] = str(value)
    return data


def form_data(form_class, body, *, names=None, lists=(), initial=None):
    """The form data for an API body. A field the body leaves out takes the page's
    default; `names` maps the API's field names to the form's where they differ (the API
    says `learning_rate` for the form's `learning_rates`); fields in `lists` also take a
    list (a sweep). Unknown fields are refused, so that a misspelt one is not ignored."""
    if not isinstance(body, Mapping):
        raise exceptions.ParseError("The body must be a JSON object of the fields, or a form.")
    names = names or {}
    known = {api_name(name, names) for name in form_class.base_fields}
    data = initial_data(form_class, initial)
    errors = {}
    for key, value in body.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            errors[key] = ["Not a field here." + (f" Did you mean {close[0]}?" if close else "")]
            continue
        if isinstance(value, UploadedFile):
            continue  # the form takes files separately
        if isinstance(value, bool):
            value = "on" if value else ""
        elif value is None:
            value = ""
        elif isinstance(value, list | tuple):
            if key not in lists or not value or not all(_is_scalar(item) for item in value):
                errors[key] = ["Give one value." if key not in lists else "Give a value or a list of values."]
                continue
            value = ",".join(str(item) for item in value)
        elif not _is_scalar(value):
            errors[key] = ["Give one value, not an object."]
            continue
        data[names.get(key, key)] = value
    if errors:
        raise exceptions.ValidationError(errors)
    return data


def _is_scalar(value):
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def api_name(form_name, names):
    return next((api for api, form in names.items() if form == form_name), form_name)


def form_invalid(form, *, names=None):
    """The form's errors as the API answers them (raise it): under the API's field names,
    and a wrong choice followed by the valid ones."""
    errors = {}
    for name, found in form.errors.as_data().items():
        field = form.fields.get(name)
        messages = []
        for error in found:
            for message in error.messages:
                if error.code == "invalid_choice" and field is not None:
                    message = f"{message} {valid_choices(field)}"
                messages.append(message)
        errors[api_name(name, names or {})] = messages
    return exceptions.ValidationError(errors)


def valid_choices(field):
    if isinstance(field, forms.ModelChoiceField):
        values = [str(pk) for pk in field.queryset.values_list("pk", flat=True)[: MAX_LISTED_CHOICES + 1]]
    else:
        values = []
        for value, label in field.choices:
            if isinstance(label, list | tuple):  # a group of choices
                values.extend(str(inner) for inner, _ in label)
            elif value not in ("", None):
                values.append(str(value))
    if not values:
        return "There is nothing to choose from."
    shown = ", ".join(values[:MAX_LISTED_CHOICES])
    return f"Valid: {shown}{', …' if len(values) > MAX_LISTED_CHOICES else ''}."


@extend_schema_field({"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}, "minItems": 1}]})
class ValueOrList(serializers.Field):
    """A number, or a list of numbers (a sweep)."""


def form_serializer(form_class, component_name, *, names=None, lists=(), files=True):
    """A serializer that describes a form's fields to the schema (the form still does the
    checking): types, ranges, choices, defaults and help texts, under the API's names."""
    fields = {}
    for name, field in form_class.base_fields.items():
        if isinstance(field, forms.FileField) and not files:
            continue
        options = {
            "required": field.required and field.initial is None,
            "help_text": " ".join(str(text) for text in (field.label, field.help_text) if text) or None,
        }
        if field.initial is not None and not options["required"]:
            options["default"] = field.initial
        api = api_name(name, names or {})
        fields[api] = _schema_field(field, api in lists, options)
    return type(component_name, (serializers.Serializer,), fields)


def _schema_field(field, listed, options):
    if listed:
        return ValueOrList(**options)
    if isinstance(field, forms.BooleanField):
        return serializers.BooleanField(**options)
    if isinstance(field, forms.ModelChoiceField):
        return serializers.IntegerField(allow_null=True, **{**options, "help_text": f"{options['help_text']} (id)"})
    if isinstance(field, forms.ChoiceField) and isinstance(field.choices, CallableChoiceIterator):
        # Choices read from a registry when a form is made (networks: it imports JAX), not at import.
        return serializers.CharField(**{**options, "help_text": f"{options['help_text']} (a wrong one lists them)"})
    if isinstance(field, forms.ChoiceField):
        # With their labels, so that the schema shares one enum with the model's field.
        choices = [(value, label) for value, label in field.choices if not isinstance(label, list | tuple)]
        if choices:
            blank = any(value == "" for value, _ in choices)
            return serializers.ChoiceField(choices=choices, allow_blank=blank, **options)
        # Choices made per user (the datasets one may train on): an id.
        return (
            serializers.IntegerField(**options)
            if getattr(field, "coerce", None) is int
            else serializers.CharField(**options)
        )
    if isinstance(field, forms.IntegerField):
        return serializers.IntegerField(
            min_value=field.min_value, max_value=field.max_value, allow_null=not field.required, **options
        )
    if isinstance(field, forms.FloatField):
        return serializers.FloatField(
            min_value=field.min_value, max_value=field.max_value, allow_null=not field.required, **options
        )
    if isinstance(field, forms.FileField):
        return serializers.FileField(**options)
    return serializers.CharField(max_length=field.max_length, allow_blank=not field.required, **options)


# --- Lists -----------------------------------------------------------------------------------


ORDERINGS = ("created", "-created", "name", "-name")
RELATED_NAMES = {"owner": ("owner__username", "The owner's username."), "team": ("team__name", "The team's name.")}


class ListFilters(BaseFilterBackend):
    """The filters a list view names in `filter_fields`: `owner` (username), `team` (name),
    a foreign key (its id), a field with choices (one of them) — plus `search` (the name
    contains it, any case) and `ordering`. A wrong value is a 400 that says what is valid."""

    def filter_queryset(self, request, queryset, view):
        params, errors, lookups = request.query_params, {}, {}
        model = queryset.model
        for name in view.filter_fields:
            value = params.get(name, "")
            if value == "":
                continue
            lookup, choices, kind = self._filter(model, name, view)
            if kind is int and not value.isdigit():
                errors[name] = [f"Give the {name}'s id, a whole number."]
            elif choices and value not in choices:
                errors[name] = [f"“{value}” is not a {name} here. Valid: {', '.join(choices)}."]
            else:
                lookups[lookup] = value
        ordering = params.get("ordering", "") or "-created"
        if ordering not in ORDERINGS:
            errors["ordering"] = [f"Order by one of: {', '.join(ORDERINGS)}."]
        if errors:
            raise exceptions.ValidationError(errors)
        queryset = queryset.filter(**lookups)
        if params.get("search"):
            queryset = queryset.filter(name__icontains=params["search"])
        # The id breaks ties, so that pages neither repeat nor skip a row.
        return queryset.order_by(ordering, "-pk" if ordering.startswith("-") else "pk")

    @staticmethod
    def _filter(model, name, view):
        if name in RELATED_NAMES:
            return RELATED_NAMES[name][0], None, str
        field = model._meta.get_field(name)
        if field.is_relation:
            return f"{name}_id", None, int
        choices = view.filter_choices[name]() if name in view.filter_choices else field.choices
        return name, [value for value, _ in choices or []], str

    def get_schema_operation_parameters(self, view):
        def query(name, description, schema):
            return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}

        parameters = []
        for name in view.filter_fields:
            _, choices, kind = self._filter(view.model, name, view)
            schema = {"type": "integer"} if kind is int else {"type": "string"}
            if choices:
                schema["enum"] = choices
            if name in RELATED_NAMES:
                description = RELATED_NAMES[name][1]
            else:
                description = f"Only this {name}" + (" (its id)." if kind is int else ".")
            parameters.append(query(name, description, schema))
        parameters.append(query("search", "The name contains this (any case).", {"type": "string"}))
        parameters.append(query("ordering", "Newest first by default.", {"type": "string", "enum": list(ORDERINGS)}))
        return parameters


class FilteredList(generics.ListAPIView):
    """A paged, filtered list. A subclass sets `model`, `serializer_class`, `filter_fields`
    (maybe `filter_choices`) and `get_queryset` (visible rows, with what the serializer
    reads joined)."""

    model = None
    filter_fields = ("status", "owner", "team")
    # Choices of a filter whose column names none: name → a function returning (value, label)s.
    filter_choices = {}
    filter_backends = [ListFilters]

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "request": self.request}


# --- Logs --------------------------------------------------------------------------------------


class LogLineSerializer(serializers.Serializer):
    level = serializers.ChoiceField(choices=["info", "warning", "error"])
    message = serializers.CharField()
    time = serializers.DateTimeField(source="created")


class JobLog(generics.ListAPIView):
    """A job's log, oldest line first, paged (`limit`, `offset`)."""

    model = None
    serializer_class = LogLineSerializer
    filter_backends = []

    @classmethod
    def of(cls, model):
        name = f"{model.__name__}Log"
        view = type(
            name,
            (cls,),
            {"model": model, "__doc__": f"The log of a {model._meta.verbose_name}, oldest line first, paged."},
        )
        return extend_schema(summary=f"The {model._meta.verbose_name}'s log")(view)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator describes it without a row
            return self.model.log_lines.rel.related_model.objects.none()
        job = get_visible_or_404(self.model.objects, self.request.user, pk=self.kwargs["pk"])
        return job.log_lines.order_by("created", "pk")


# --- The index and the schema --------------------------------------------------------------------


def api_routes():
    """Every named route under /api/ without a parameter: each app's lists, the schema, the docs."""
    found = {}

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern) and entry.name:
                route = prefix + str(entry.pattern)
                if route.startswith("api/") and "<" not in route and route != "api/":
                    found[entry.name.removeprefix("api-")] = reverse(entry.name)

    walk(get_resolver().url_patterns, "")
    return found


class ApiIndex(APIView):
    @extend_schema(
        summary="The index of the API",
        responses=inline_serializer(
            "ApiIndex", {"*": serializers.URLField(help_text="A list, the schema or the docs.")}
        ),
    )
    def get(self, request):
        """Links to each list, the OpenAPI schema and its documentation pages."""
        return Response({name: request.build_absolute_uri(url) for name, url in sorted(api_routes().items())})
