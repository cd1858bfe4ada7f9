"""Programs that drive a running service from outside, over HTTP or NATS, as any producer would.

They may import adapters but nothing of api/ or handlers/: a client that reached into the
service's insides would no longer prove that the wire protocol is enough.
"""
