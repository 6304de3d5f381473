from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.access import OwnedQuerySet
from accounts.models import Visibility


class SavedNetwork(models.Model):
    """A network spec saved under a name, to reuse in new experiments and share with a
    team. The standard networks are code in models/networks/ and need no row."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    spec = models.TextField()
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="saved_networks")
    team = models.ForeignKey("accounts.Team", models.SET_NULL, null=True, blank=True, related_name="saved_networks")
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.TEAM)
    created = models.DateTimeField(default=timezone.now)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("network-detail", args=[self.pk])
