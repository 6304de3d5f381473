from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.access import Owned
from accounts.models import Visibility


class SavedNetwork(Owned):
    """A network spec saved under a name, to reuse in new experiments and share with a
    team. The standard networks are code in models/networks/ and need no row."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    spec = models.TextField()
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.TEAM)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("network-detail", args=[self.pk])
