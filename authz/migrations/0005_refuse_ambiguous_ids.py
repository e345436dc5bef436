"""Refuse to upgrade over access-control rows this version would read wrongly.

A ``!`` in the name part of a user id made ``<user id>!<token name>`` ambiguous (``root@pam!a@pve``
is a user of realm ``pve``, yet begins like a token of root@pam), and a token row whose id does
not start with its own user's id, or a built-in realm of another type, would be misread the same
way. Such rows are not rewritten here (the database is replicated: every change must be a change
set): the upgrade stops and says which rows to remove with the previous version.
"""

from django.core.management.base import CommandError
from django.db import migrations

from authz import ids


def refuse_ambiguous_ids(apps, schema_editor):
    alias = schema_editor.connection.alias
    User = apps.get_model("authz", "User")
    APIToken = apps.get_model("authz", "APIToken")
    Realm = apps.get_model("authz", "Realm")
    problems = []
    for userid in User.objects.using(alias).values_list("userid", flat=True):
        if not ids.is_valid_userid(userid):
            problems.append(f"user '{userid}' (a user name may not contain '!', ',', ';', ':', '/', blanks or control characters)")
    for tokenid, userid in APIToken.objects.using(alias).values_list("tokenid", "user_id"):
        name = tokenid[len(userid) + 1 :]
        if not tokenid.startswith(f"{userid}!") or not ids.is_valid_tokenid(tokenid) or "!" in name:
            problems.append(f"API token '{tokenid}' of user '{userid}'")
    for realm, realm_type in Realm.objects.using(alias).values_list("realm", "type"):
        builtin = realm in ("pam", "pve")
        if (builtin and realm_type != realm) or (not builtin and realm_type in ("pam", "pve")):
            problems.append(f"realm '{realm}' of type '{realm_type}' (only 'pam' and 'pve' have those types)")
    if problems:
        raise CommandError(
            "authz: this cluster holds access-control rows that this version refuses, because they "
            "could make one user act as another:\n  "
            + "\n  ".join(problems)
            + "\nWith the previous version, on a quorate node, remove them (pveum user delete, pveum user "
            "token remove) or give the realm back its type (admin), then run the migration again. "
            "Nothing was changed."
        )


class Migration(migrations.Migration):
    dependencies = [
        ("authz", "0004_key_created"),
    ]

    operations = [
        migrations.RunPython(refuse_ambiguous_ids, migrations.RunPython.noop, hints={"model_name": "user"}),
    ]
