"""The lab harness: a real multi-node corosync cluster on one Linux host, in network namespaces.

No Django here but the app glue (``apps``, the ``lab`` command); production code never imports it.
"""
