"""Recovery: snapshots, recovery points, full / selective / point-in-time recovery,
backups, and the health monitor that detects corruption and repairs it."""
