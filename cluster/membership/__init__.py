"""Membership: nodes joining and leaving (create, join, addnode, delnode, pvecm's verbs), a node's first start, routing to members."""
