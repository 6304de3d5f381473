from django.contrib import messages
from django.shortcuts import redirect, render
from rest_framework.authtoken.models import Token


def api_token(request):
    if request.method == "POST":
        Token.objects.filter(user=request.user).delete()
        Token.objects.create(user=request.user)
        messages.success(request, "A new API token was created; the old one no longer works.")
        return redirect("api-token")

    token = Token.objects.filter(user=request.user).first()
    ctx = {"token": token, "teams": request.user.memberships.select_related("team")}
    return render(request, "accounts/api_token.html", ctx)
