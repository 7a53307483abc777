"""The work directory: one writer (lock.py), the run record (record.py, environment.py), and the
session that ties them to a writing start (session.py). See README, "The work directory"."""
