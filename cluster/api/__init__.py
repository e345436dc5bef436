"""The cluster's REST API views, one module per resource (``config``, ``nodes``, ``tasks``); routes in ``urls``."""
