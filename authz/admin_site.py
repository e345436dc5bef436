"""The admin site: logins issue a cluster-signed PVEAuthCookie ticket instead of a DB session."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from authz import authentication, ids, throttle
from authz.exceptions import AuthenticationFailed
from authz.middleware import COOKIE
from authz.permissions import has_privileges
from portal import audit, banners

TICKET_LIFETIME = 7200


class LoginForm(forms.Form):
    username = forms.CharField(label="User name", max_length=64)
    password = forms.CharField(label="Password", widget=forms.PasswordInput, max_length=4096)
    realm = forms.ChoiceField(label="Realm", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from authz.models import Realm

        realms = list(Realm.objects.order_by("-default", "realm").values_list("realm", "comment"))
        cast(forms.ChoiceField, self.fields["realm"]).choices = [
            (name, f"{comment or name} ({name})") for name, comment in realms
        ]

    def userid(self) -> str:
        """``name@realm``; a name typed with its realm wins over the chooser, as in Proxmox's GUI."""
        return ids.login_userid(self.cleaned_data["username"], self.cleaned_data.get("realm"))


def login_attempt(request: HttpRequest) -> throttle.Attempt | None:
    """The password login a POST to the login page makes, read as the page reads it (login gate)."""
    form = LoginForm(request.POST)
    if not form.is_valid():
        return None
    return throttle.Attempt.of(form.userid(), str(request.META.get("REMOTE_ADDR", "")))


def set_ticket_cookie(response: HttpResponse, ticket: str) -> None:
    """The cookie Proxmox's GUI sets: secure, SameSite=Lax, path /."""
    # URI-escaped as Proxmox does, so no cookie quoting is needed (':' '=' '+' '/' are in tickets).
    response.set_cookie(
        COOKIE, quote(ticket, safe=""), max_age=TICKET_LIFETIME, secure=True, httponly=True, samesite="Lax"
    )


class PVEAdminSite(admin.AdminSite):
    site_header = "Proxmox VE (Django) cluster"
    site_title = "PVE cluster"
    index_title = "Datacenter"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_authenticated and user.is_active and user.is_staff)

    @method_decorator(never_cache)
    @method_decorator(csrf_protect)
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        next_url = request.POST.get("next") or request.GET.get("next") or reverse("admin:index", current_app=self.name)
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}, require_https=True):
            next_url = reverse("admin:index", current_app=self.name)
        form = LoginForm(request.POST or None)
        error = ""
        if request.method == "POST" and form.is_valid():
            try:
                user = authentication.login(
                    form.userid(),
                    form.cleaned_data["password"],
                    rhost=request.META.get("REMOTE_ADDR", ""),
                )
                ticket, _csrf = authentication.issue_ticket(user)
            except AuthenticationFailed:
                error = "Login failed: wrong user name or password."
            else:
                response = HttpResponseRedirect(next_url)
                set_ticket_cookie(response, ticket)
                return response
        context = {
            **self.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "form": form,
            "login_error": error,
            "next": next_url,
            "site_header": self.site_header,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/pve_login.html", context, status=401 if error else 200)

    login.login_attempt = login_attempt  # type: ignore[attr-defined]  # waits at authz.login_gate

    @method_decorator(never_cache)
    @method_decorator(require_POST)
    def logout(  # type: ignore[override]  # a redirect: django-stubs says TemplateResponse, Django's may redirect too
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """POST only (the admin's logout button is a form with its CSRF token): a link or an image
        on another site must not log the user out."""
        response = HttpResponseRedirect(reverse("admin:login", current_app=self.name))
        response.delete_cookie(COOKIE, samesite="Lax")
        return response

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The cluster log as Proxmox shows it: all of it with Sys.Syslog on ``/``, else the user's own."""
        user = request.user
        own = None if has_privileges(user, "/", ["Sys.Syslog"]) else str(getattr(user, "userid", ""))
        context = {"recent_audit": audit.recent(10, user=own), "banners": banners.collect(), **(extra_context or {})}
        return super().index(request, context)
