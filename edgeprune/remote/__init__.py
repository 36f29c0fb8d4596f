"""Remote profiling over TVM RPC: device servers (device.py), host-side sessions and meter (client.py)."""
