"""The balancer: nginx in front of the replicas, sticky per browser, sending new sessions
only to ready replicas. `counter-service balance` runs it (compose's nginx service);
`counter-service up` runs the same in front of its local replicas."""

from counter_service.balancer.command import add_parser, run
from counter_service.balancer.core import Balancer
from counter_service.balancer.nginx import Nginx, NginxError, find_nginx
from counter_service.balancer.replicas import Discovery, Replica, replica_id

__all__ = [
    "Balancer",
    "Discovery",
    "Nginx",
    "NginxError",
    "Replica",
    "add_parser",
    "find_nginx",
    "replica_id",
    "run",
]
