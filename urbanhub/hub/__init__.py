"""The context hub's services: entity writes, and the one query service every read uses."""
