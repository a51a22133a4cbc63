"""The services gateway: one endpoint per service in front of its replicas.

HAProxy carries the requests (a Python proxy would cost more than the whole model server's overhead);
this package writes its configuration (``config``), runs and reloads it (``haproxy``) and reads its access
log to measure each service and revision (``accesslog``). ``routes`` is the desired state the rollout step
hands over.
"""
