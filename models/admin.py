from django.contrib import admin

from models.models import SavedNetwork


@admin.register(SavedNetwork)
class SavedNetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "team", "visibility", "created"]
    list_filter = ["visibility", "team"]
    search_fields = ["name", "owner__username", "description"]
