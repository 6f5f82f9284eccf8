"""Pure domain model of dexec: orders, statuses, quotes, errors, settings, routing."""
