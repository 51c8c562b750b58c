"""Several Citygate nodes as one: leases in the shared database decide who owns each camera
and who runs each cluster-wide job (see ``leases``, ``membership``)."""
