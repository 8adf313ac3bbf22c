"""Pure domain types and rules: nothing in here performs I/O."""
