"""The report's text, figures and HTML, from the run's records (every user-derived string escaped)."""
