from django.urls import path

from accounts import teams

urlpatterns = [
    path("", teams.team_list, name="team-list"),
    path("<int:pk>/", teams.team_detail, name="team-detail"),
    path("<int:pk>/members/", teams.member_add, name="team-member-add"),
    path("<int:pk>/members/<int:membership_pk>/role/", teams.member_role, name="team-member-role"),
    path("<int:pk>/members/<int:membership_pk>/remove/", teams.member_remove, name="team-member-remove"),
    path("<int:pk>/leave/", teams.team_leave, name="team-leave"),
]
