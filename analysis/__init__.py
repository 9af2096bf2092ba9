"""Tables and figures from the collected run records (reads ``studies.store`` only)."""
