"""The cluster's REST API views, one module per resource: ``config`` (/cluster/config), ``nodes``, ``tasks``."""
