"""The shared base of the /api2/json API: envelope, parsing, errors, parameters, views, routing.

Only Django, DRF and the standard library are imported here; apps plug in their exceptions with
``portal.api.errors.register_error``.
"""
