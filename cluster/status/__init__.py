"""Node status: this node's live statistics for the volatile status, and clock skew between nodes."""
