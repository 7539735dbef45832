"""A run's books: its plan, work files, lock, report rows and report page."""
