"""The access-control endpoints under ``/api2/json/access`` (gathered by ``portal.urls``)."""

from authz.api import acl, domains, groups, password, permissions, roles, tickets, tokens, users
from portal.api.routing import api_path

urlpatterns = [
    api_path("access/ticket", tickets.TicketView.as_view()),
    api_path("access/domains", domains.DomainsView.as_view()),
    api_path("access/domains/{realm}", domains.DomainView.as_view()),
    api_path("access/domains/{realm}/sync", domains.DomainSyncView.as_view()),
    api_path("access/acl", acl.AclView.as_view()),
    api_path("access/permissions", permissions.PermissionsView.as_view()),
    api_path("access/password", password.PasswordView.as_view()),
    api_path("access/users", users.UsersView.as_view()),
    api_path("access/users/{userid}", users.UserView.as_view()),
    api_path("access/users/{userid}/token", tokens.TokensView.as_view()),
    api_path("access/users/{userid}/token/{tokenid}", tokens.TokenView.as_view()),
    api_path("access/groups", groups.GroupsView.as_view()),
    api_path("access/groups/{groupid}", groups.GroupView.as_view()),
    api_path("access/roles", roles.RolesView.as_view()),
    api_path("access/roles/{roleid}", roles.RoleView.as_view()),
]
